#!/usr/bin/env bash
# `make kind-down`: delete the lab's kind cluster and everything in it (volumes included).
# Idempotent: with no cluster there is nothing to do. DRY_RUN=1 (or --dry-run) only prints.
set -euo pipefail
CLUSTER="${KIND_CLUSTER:-mlsd-lab}"
DRY_RUN="${DRY_RUN:-0}"
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
if ! command -v kind >/dev/null 2>&1; then
  echo "missing: kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation); no cluster to remove without it" >&2
  exit 1
fi
if [ "$DRY_RUN" = "1" ]; then
  echo "    \$ kind delete cluster --name $CLUSTER"
elif kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER: nothing to remove"
fi
