#!/usr/bin/env bash
# `make kind-up`: the whole lab on a kind cluster (infra/k8s/README.md). Every step is idempotent:
# a second run changes nothing. DRY_RUN=1 (or --dry-run) prints the steps and runs none of them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-mlsd-lab}"
NAMESPACE="mlsd"
IMAGE="mlsd-lab:$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"
OVERLAY="$ROOT/infra/k8s/overlays/kind"
KIND_CONFIG="$OVERLAY/kind-config.yaml"
# Pinned: the InferenceServices are checked against the kserve SDK of the same release (uv.lock).
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.16.3}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.21.0}"
CERT_MANAGER_URL="https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
KSERVE_URL="https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
KSERVE_RUNTIMES_URL="https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
TIMEOUT="${KIND_UP_TIMEOUT:-1800s}"

DRY_RUN="${DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kind-up: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
# run CMD...: the command, printed; under DRY_RUN only printed.
run() {
  printf '    $ %s\n' "$*"
  [ "$DRY_RUN" = "1" ] || "$@"
}

# --- 1. prerequisites: every missing tool named, with where to get it --------------------------
check_prerequisites() {
  local missing=0
  if ! command -v docker >/dev/null 2>&1; then
    echo "missing: docker (the engine kind runs its node in): https://docs.docker.com/engine/install/" >&2
    missing=1
  elif [ "$DRY_RUN" != "1" ] && ! docker info >/dev/null 2>&1; then
    echo "docker is installed but its engine does not answer (is dockerd running, may you use it?)" >&2
    missing=1
  fi
  if ! command -v kind >/dev/null 2>&1; then
    echo "missing: kind (Kubernetes in Docker, v0.27 or later): https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
    missing=1
  fi
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "missing: kubectl (1.32 or later): https://kubernetes.io/docs/tasks/tools/ (or .venv/bin/kubectl after 'make install')" >&2
    missing=1
  fi
  if [ "$missing" = "1" ]; then
    echo "kind-up: install what is missing above, then run 'make kind-up' again." >&2
    exit 1
  fi
}

# ensure_secret NAME KEY=VALUE...: made once, at install time, never rotated by a second run
# (a new password would lock the running databases out); never committed.
ensure_secret() {
  local name="$1"; shift
  local literals=()
  for kv in "$@"; do literals+=(--from-literal="$kv"); done
  if [ "$DRY_RUN" = "1" ]; then
    printf '    $ kubectl -n %s create secret generic %s %s   (only if absent; values random)\n' \
      "$NAMESPACE" "$name" "${*%%=*}"
    return
  fi
  if kubectl -n "$NAMESPACE" get secret "$name" >/dev/null 2>&1; then
    echo "    secret $name exists: kept"
  else
    kubectl -n "$NAMESPACE" create secret generic "$name" "${literals[@]}" >/dev/null
    echo "    secret $name made"
  fi
}

random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

main() {
  step "1/9 prerequisites (docker, kind, kubectl)"
  check_prerequisites

  step "2/9 cluster $CLUSTER (kind, Kubernetes 1.32)"
  if [ "$DRY_RUN" != "1" ] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "    cluster $CLUSTER exists: kept"
  else
    run kind create cluster --name "$CLUSTER" --config "$KIND_CONFIG" --wait 120s
  fi
  run kubectl config use-context "kind-$CLUSTER"

  step "3/9 cert-manager $CERT_MANAGER_VERSION (KServe's webhooks need its certificates)"
  run kubectl apply --server-side --force-conflicts -f "$CERT_MANAGER_URL"
  run kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=300s

  step "4/9 KServe $KSERVE_VERSION in Standard mode (no Knative, no Istio)"
  run kubectl apply --server-side --force-conflicts -f "$KSERVE_URL"
  run kubectl -n kserve wait --for=condition=Available deployment/kserve-controller-manager --timeout=300s
  run kubectl apply --server-side --force-conflicts -f "$KSERVE_RUNTIMES_URL"
  # Standard mode by default, and no Ingress (users reach services by port-forward).
  run kubectl -n kserve patch configmap inferenceservice-config --type merge -p \
    '{"data":{"deploy":"{\"defaultDeploymentMode\":\"Standard\"}"}}'
  run kubectl -n kserve patch configmap inferenceservice-config --type merge -p \
    '{"data":{"ingress":"{\"disableIngressCreation\":true,\"ingressGateway\":\"\",\"ingressDomain\":\"cluster.local\"}"}}'

  step "5/9 the project's image $IMAGE, built and loaded into the node (no registry)"
  run docker build -t "$IMAGE" "$ROOT"
  run kind load docker-image "$IMAGE" --name "$CLUSTER"

  step "6/9 namespace and Secrets made at install time (random, kept on later runs)"
  run kubectl apply -f "$ROOT/infra/k8s/base/namespaces.yaml"
  ensure_secret mlsd-postgres "password=$(random)"
  ensure_secret mlsd-minio "root-user=mlsd" "root-password=$(random)"
  ensure_secret mlsd-router-admin "token=$(random)"

  step "7/9 the platform (kubectl apply -k infra/k8s/overlays/kind)"
  run kubectl apply -k "$OVERLAY"

  step "8/9 wait: stores, registry, Prefect, the bootstrap job (data, first models), model servers, router, world"
  run kubectl -n "$NAMESPACE" rollout status statefulset/postgres statefulset/minio --timeout=600s
  run kubectl -n "$NAMESPACE" rollout status deployment/redis deployment/mlflow deployment/prefect deployment/prefect-worker --timeout=600s
  run kubectl -n "$NAMESPACE" wait --for=condition=complete job/mlsd-bootstrap --timeout="$TIMEOUT"
  run kubectl -n "$NAMESPACE" wait --for=condition=Ready inferenceservice --all --timeout=900s
  run kubectl -n "$NAMESPACE" rollout status deployment/router --timeout=300s
  # The world's init container holds its clock until the router routes both products.
  run kubectl -n "$NAMESPACE" rollout status deployment/world --timeout=300s

  step "9/9 smoke request through the router"
  if [ "$DRY_RUN" = "1" ]; then
    printf '    $ kubectl -n %s port-forward svc/router 18080:8080 & curl -X POST localhost:18080/v1/fraud/score ...\n' "$NAMESPACE"
  else
    kubectl -n "$NAMESPACE" port-forward svc/router 18080:8080 >/dev/null 2>&1 &
    PF=$!
    trap 'kill $PF 2>/dev/null || true' EXIT
    for _ in $(seq 30); do curl -fsS localhost:18080/readyz >/dev/null 2>&1 && break; sleep 1; done
    curl -fsS -X POST localhost:18080/v1/fraud/score -H 'content-type: application/json' -d \
      '{"card_id":"smoke","merchant_id":"smoke","amount":12.5,"country":"US","device_id":"smoke","timestamp":"2026-01-01T12:00:00Z"}'
    echo
    kill "$PF" 2>/dev/null || true
  fi

  cat <<EOF

The lab runs on kind-$CLUSTER. Reach its UIs with port-forward (one terminal each):
  kubectl -n $NAMESPACE port-forward svc/router 8080:8080    # API: http://localhost:8080/docs
  kubectl -n $NAMESPACE port-forward svc/mlflow 5000:5000    # MLflow: http://localhost:5000
  kubectl -n $NAMESPACE port-forward svc/prefect 4200:4200   # Prefect: http://localhost:4200
  kubectl -n $NAMESPACE port-forward svc/minio 9001:9001     # MinIO console: http://localhost:9001
  kubectl -n $NAMESPACE port-forward svc/world 8090:8090     # the world: mlsd traffic start, mlsd drift
Admin token: kubectl -n $NAMESPACE get secret mlsd-router-admin -o jsonpath='{.data.token}' | base64 -d
Next steps (drift, retrain as a Job, canary, scaling): infra/k8s/README.md. Remove it all: make kind-down
EOF
}

main
