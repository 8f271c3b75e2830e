"""The trigger's I/O: read the state (last request, a retrain running), decide with the pure
policy, emit `mlsd.retrain.requested` or `mlsd.retrain.suppressed`, record the request.

First line of defence against a storm of signals: decide-and-record runs under a per-product
file lock, so concurrent monitor runs see each other's request (the later ones are suppressed
by the cooldown, out loud). The second line is the training deployment's own trigger and
concurrency limit (pipeline/deployments.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlsd.events as events
from monitoring.trigger import RetrainState, TriggerDecision, TriggerPolicy, decide_retrain
from monitoring.verdict import WindowVerdict

# A retrain in one of these states is "running" for the policy (Scheduled covers a run waiting
# for the deployment's concurrency slot).
ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING")


def training_flow_name(product: str) -> str:
    return f"train_{product}"


def running_retrain(product: str) -> tuple[bool, str]:
    """Whether a training flow run of the product is scheduled, pending or running (Prefect)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[training_flow_name(product)])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType[s] for s in ACTIVE_STATES])
                )
            ),
            limit=5,
        )
    if not runs:
        return False, ""
    run = runs[0]
    return True, f"flow run {run.name}, {run.state.name if run.state else 'unknown'}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_request(state_dir: Path) -> dict[str, Any] | None:
    """The last retrain request recorded for a product (`last_requested_at`, epoch seconds;
    its `reason` and `window_ids`), or None when there was none."""
    try:
        state = json.loads((state_dir / "trigger.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("last_requested_at") is None:
        return None
    return state


def _read_state(state_dir: Path) -> float | None:
    state = last_request(state_dir)
    return None if state is None else float(state["last_requested_at"])


def _write_state(path: Path, requested_at: float, decision: TriggerDecision) -> None:
    tmp = path.with_suffix(".partial")
    tmp.write_text(
        json.dumps(
            {
                "last_requested_at": requested_at,
                "reason": decision.reason,
                "window_ids": list(decision.window_ids),
            },
            indent=2,
        )
    )
    os.replace(tmp, path)


def payload(decision: TriggerDecision, history: Sequence[WindowVerdict]) -> dict[str, Any]:
    """The event's payload: the reason, the windows and their figures."""
    by_id = {v.window_id: v for v in history}
    figures = {
        wid: {
            "rows": by_id[wid].rows,
            "drifted_share": by_id[wid].drifted_share,
            "score_psi": by_id[wid].score_psi,
            "pr_auc": by_id[wid].pr_auc,
            "reference_pr_auc": by_id[wid].reference_pr_auc,
            "signals": list(decision.signals.get(wid, ())),
        }
        for wid in decision.window_ids
        if wid in by_id
    }
    latest = history[-1] if history else None
    return {
        "reason": decision.reason,
        "window_ids": list(decision.window_ids),
        "figures": figures,
        "version": latest.model_version if latest else None,
    }


def apply_trigger(
    state_dir: Path,
    product: str,
    history: Sequence[WindowVerdict],
    policy: TriggerPolicy,
    now: float | None = None,
) -> TriggerDecision:
    """Decide on the history and emit what was decided (nothing for "none")."""
    with _locked(state_dir / "trigger.lock"):
        state_path = state_dir / "trigger.json"
        running, what = running_retrain(product)
        state = RetrainState(_read_state(state_dir), running, what)
        now = time.time() if now is None else now
        decision = decide_retrain(history, state, now, policy)
        if decision.action == "retrain":
            events.emit(
                events.RETRAIN_REQUESTED,
                events.model_resource(product),
                payload(decision, history),
            )
            _write_state(state_path, now, decision)
        elif decision.action == "suppress":
            events.emit(
                events.RETRAIN_SUPPRESSED,
                events.model_resource(product),
                payload(decision, history),
            )
    return decision
