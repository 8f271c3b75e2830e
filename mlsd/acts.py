"""The loop's acts, played against a running lab (`mlsd up` with the world and serving): each
changes the world or the registry, then waits on the lab's own events (Prefect's event feed)
until the act's ending arrives, and says whether it is the expected one. `make demo` plays
them and the loop's end-to-end test asserts them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlsd import events as ev
from mlsd.settings import Settings
from mlsd.timeline import TimelineEvent, read_timeline


@dataclass
class ActResult:
    """How an act ended, against what it should have."""

    name: str
    expected: str
    outcome: str
    seconds: float
    events: list[TimelineEvent] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == self.expected


Ending = Callable[[list[TimelineEvent]], str | None]

# Each act's name and the outcome it should end with.
BROKEN_UPSTREAM = ("broken upstream (schema-break)", "quarantined, alert, no retrain")
BAD_MODEL = ("bad model (training-serving skew)", "rolled back")


def drift_act(scenario: str) -> tuple[str, str]:
    return f"drift ({scenario})", "promoted"


def played(
    settings: Settings, name_expected: tuple[str, str], act: Callable[[], ActResult]
) -> ActResult:
    """`act()`, or, when an error stopped it, a failed act whose outcome is that error: the acts
    after it still play and the demo still prints its summary and exits non-zero. (Seen once in
    a bench: Prefect's SQLite database stayed locked past its client's retries, and the whole
    demo ended in a traceback with no act reported.) The traceback goes to logs/demo.log."""
    import traceback

    started = time.monotonic()
    try:
        return act()
    except Exception as err:  # any error ends the act: its kind and message are its outcome
        log = settings.logs_dir / "demo.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"{dt.datetime.now(dt.UTC).isoformat()} act {name_expected[0]!r}:\n")
            out.write(traceback.format_exc())
        first_line = (str(err).splitlines() or [""])[0][:200]
        outcome = f"stopped by {type(err).__name__}: {first_line} (traceback in {log})"
        return ActResult(*name_expected, outcome, time.monotonic() - started)


def wait_for_ending(
    settings: Settings,
    since: dt.datetime,
    ending: Ending,
    timeout_seconds: float,
    poll_seconds: float = 1.0,
    on_poll: Callable[[list[TimelineEvent]], None] | None = None,
) -> tuple[str, list[TimelineEvent]]:
    """Read the lab's events since `since` until `ending` names an outcome (or time runs out:
    outcome "timed out"); then the act's timeline, with the flow runs that matter."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        seen = read_timeline(since, api_url=settings.prefect_api_url, flow_runs=False)
        if on_poll:
            on_poll(seen)
        outcome = ending(seen)
        if outcome is not None or time.monotonic() >= deadline:
            break
        time.sleep(poll_seconds)
    everything = read_timeline(since, api_url=settings.prefect_api_url, flow_runs=True)
    return outcome or "timed out", [e for e in everything if worth_showing(e)]


# Flow runs an act's timeline shows (a landing run starts every simulated day: not those).
SHOWN_FLOWS = ("train_fraud", "train_recsys", "rollout")
SHOWN_STATES = ("Running", "Completed", "Failed", "Crashed", "Cancelled")


def worth_showing(e: TimelineEvent) -> bool:
    if not e.name.startswith("prefect.flow-run."):
        return e.name != ev.BATCH_LANDED or e.payload.get("scenario") not in (None, "none")
    return e.flow in SHOWN_FLOWS and e.name.rsplit(".", 1)[-1] in SHOWN_STATES


def _of(events: Sequence[TimelineEvent], name: str, product: str = "fraud") -> list[TimelineEvent]:
    return [
        e
        for e in events
        if e.name == name and e.resource in (f"mlsd.model.{product}", f"mlsd.world.{product}")
    ]


def drifted_shares(events: Sequence[TimelineEvent]) -> list[float]:
    """The share of the fraud model's inputs drifted in each window judged, in time order."""
    return [
        round(float(e.payload["drifted_share"]), 3)
        for e in _of(events, ev.WINDOW_JUDGED)
        if e.payload.get("drifted_share") is not None
    ]


def rollout_ending(events: list[TimelineEvent]) -> str | None:
    """How a retrain's story ends: promoted, rolled back, refused by the gate, or left to
    someone else (an experiment or a person took the traffic)."""
    if _of(events, ev.PROMOTED):
        return "promoted"
    if _of(events, ev.ROLLED_BACK):
        return "rolled back"
    if _of(events, ev.ROLLOUT_STOOD_ASIDE):
        return "the rollout stood aside"
    refused = [e for e in _of(events, ev.GATE_VERDICT) if e.payload.get("decision") == "rejected"]
    return "refused by the gate" if refused else None


def ending_reason(events: list[TimelineEvent]) -> str | None:
    """Why a retrain's story ended as it did: the reason of its rollback, stand-aside or gate
    verdict (a person reads it in the acts' table; `make bench` records it)."""
    for name in (ev.ROLLED_BACK, ev.ROLLOUT_STOOD_ASIDE, ev.GATE_VERDICT):
        found = _of(events, name)
        if found and found[-1].payload.get("reason"):
            return str(found[-1].payload["reason"])[:300]
    return None


def drifted_day_landed(settings: Settings, events: list[TimelineEvent], scenario: str) -> bool:
    """A day under `scenario` landed and passed the gate into the offline store."""
    from pipeline.offline_store import partition_path

    for e in _of(events, ev.BATCH_LANDED):
        if e.payload.get("scenario") == scenario and e.payload.get("day"):
            day = dt.date.fromisoformat(e.payload["day"])
            if partition_path(settings.offline_dir, "fraud", "transactions", day).exists():
                return True
    return False


def request_retrain(product: str, reason: str, figures: dict[str, Any] | None = None) -> None:
    """What the monitor's trigger emits when its policy decides to retrain."""
    ev.emit(ev.RETRAIN_REQUESTED, ev.model_resource(product), {"reason": reason, **(figures or {})})


# The drift act's milestones: (figure key, event, what a reader calls it, the flow of a Prefect
# flow-run event or "" for a lab event), in their order. The retrain's run starting splits
# Prefect's start of the deployment run from the run itself.
DRIFT_MILESTONES = (
    ("injection_to_retrain_requested_s", ev.RETRAIN_REQUESTED, "retrain requested", ""),
    (
        "injection_to_retrain_running_s",
        "prefect.flow-run.Running",
        "retrain running",
        "train_fraud",
    ),
    ("injection_to_challenger_registered_s", ev.CHALLENGER_REGISTERED, "challenger registered", ""),
    ("injection_to_shadow_passed_s", ev.SHADOW_PASSED, "shadow passed", ""),
    ("injection_to_promoted_s", ev.PROMOTED, "promoted", ""),
)


def milestone_seconds(events: Sequence[TimelineEvent]) -> dict[str, float]:
    """Where the drift act's time went: each milestone's first event after the injection, in
    seconds since it (none before an injection is seen)."""
    injected = _of(events, ev.DRIFT_INJECTED)
    if not injected:
        return {}
    t0 = injected[0].occurred
    out = {}
    for key, name, _, flow in DRIFT_MILESTONES:
        found = (
            [e for e in events if e.name == name and e.flow == flow] if flow else _of(events, name)
        )
        found = [e for e in found if e.occurred >= t0]
        if found:
            out[key] = round((found[0].occurred - t0).total_seconds(), 1)
    return out


def act_drift(
    settings: Settings,
    *,
    scenario: str = "amount-inflation",
    request_retrain_after_landing: bool = False,
    timeout_seconds: float = 300.0,
    on_poll: Callable[[list[TimelineEvent]], None] | None = None,
) -> ActResult:
    """Drift: inject `scenario` -> detected -> retrain -> canary -> promoted.

    `request_retrain_after_landing`: emit the retrain request once a drifted day has landed, as
    the monitor would (for a lab that runs no monitor)."""
    from mlsd.commands.world import world_call

    since = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    world_call(settings, "PUT", "/drift/fraud", json={"scenario": scenario})
    requested = False

    def ending(events: list[TimelineEvent]) -> str | None:
        nonlocal requested
        if (
            request_retrain_after_landing
            and not requested
            and drifted_day_landed(settings, events, scenario)
        ):
            request_retrain("fraud", f"{scenario}: a drifted day landed")
            requested = True
        return rollout_ending(events)

    try:
        outcome, seen = wait_for_ending(settings, since, ending, timeout_seconds, on_poll=on_poll)
    finally:
        world_call(settings, "DELETE", "/drift/fraud")
    seconds = time.monotonic() - started
    figures: dict[str, Any] = {}
    if outcome != "promoted" and (why := ending_reason(seen)):
        figures["why"] = why
    figures.update(milestone_seconds(seen))
    return ActResult(*drift_act(scenario), outcome, seconds, seen, figures)


def champion_version(settings: Settings, product: str = "fraud") -> str | None:
    from mlsd.registry import CHAMPION, ModelRegistry

    registry = ModelRegistry(settings.mlflow_tracking_uri)
    return registry.version_of(settings.training.model_name(product), CHAMPION)


def _arms(settings: Settings) -> dict[str, int]:
    from mlsd.commands.world import world_call

    return dict(world_call(settings, "GET", "/status").get("arms", {}))


def act_bad_model(
    settings: Settings,
    *,
    flip_flag: str = "is_new_device",
    timeout_seconds: float = 300.0,
    on_poll: Callable[[list[TimelineEvent]], None] | None = None,
) -> ActResult:
    """A bad model: a retrain whose training set computed `flip_flag` with the opposite
    convention (a training-serving skew the offline gate cannot see) passes the gate, blocks
    far more payments, on copies in its shadow or in a canary step -> the alert-rate guardrail
    is breached -> rolled back, the champion untouched. Its share of traffic counts the answers
    callers got from it (none when the shadow caught it)."""
    from prefect.deployments import run_deployment

    from pipeline.deployments import DEPLOYMENT_NAMES

    since = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    champion = champion_version(settings)
    arms_before = _arms(settings)
    run_deployment(
        DEPLOYMENT_NAMES["fraud"],
        parameters={"flip_flag": flip_flag, "seed": 11},
        timeout=0,  # do not wait: the rest happens by events
    )
    outcome, seen = wait_for_ending(
        settings, since, rollout_ending, timeout_seconds, on_poll=on_poll
    )
    arms_after = _arms(settings)
    seconds = time.monotonic() - started
    if outcome == "rolled back" and champion_version(settings) != champion:
        outcome = "rolled back, but the champion moved"
    answered = {
        arm: arms_after.get(f"fraud/{arm}", 0) - arms_before.get(f"fraud/{arm}", 0)
        for arm in ("champion", "challenger")
    }
    figures: dict[str, Any] = {"answers_by_arm": answered}
    total = sum(answered.values())
    # The first breach, in the judged shadow (the challenger answered nobody) or a canary step.
    breached = sorted(
        _of(seen, ev.SHADOW_BREACHED) + _of(seen, ev.CANARY_STEP_BREACHED), key=lambda e: e.occurred
    )
    rolled = _of(seen, ev.ROLLED_BACK)
    if total:  # when the bad model got through above all
        figures["challenger_share_of_traffic"] = round(answered["challenger"] / total, 4)
    if breached and rolled:
        figures["breach_to_rollback_s"] = round(
            (rolled[0].occurred - breached[0].occurred).total_seconds(), 2
        )
        figures["breach"] = breached[0].payload.get("reason", "")
    return ActResult(*BAD_MODEL, outcome, seconds, seen, figures)


def act_broken_upstream(
    settings: Settings,
    *,
    timeout_seconds: float = 180.0,
    quiet_seconds: float = 20.0,
    on_poll: Callable[[list[TimelineEvent]], None] | None = None,
) -> ActResult:
    """Broken upstream: `schema-break` -> batches quarantined, a quality alert raised, no
    retrain, serving unchanged (the champion and its routing as they were)."""
    from mlsd.commands.world import world_call

    since = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    champion = champion_version(settings)
    world_call(settings, "PUT", "/drift/fraud", json={"scenario": "schema-break"})
    alerted_at: list[float] = []

    def ending(events: list[TimelineEvent]) -> str | None:
        if _of(events, ev.RETRAIN_REQUESTED) or _of(events, ev.CHALLENGER_REGISTERED):
            return "a retrain started"
        if any(e.payload.get("source") == "ingest" for e in _of(events, ev.QUALITY_ALERT)):
            alerted_at.append(time.monotonic())
            # Watch a while longer: a retrain must not follow the alert.
            if alerted_at[-1] - alerted_at[0] >= quiet_seconds:
                return "quarantined, alert, no retrain"
        return None

    try:
        outcome, seen = wait_for_ending(settings, since, ending, timeout_seconds, on_poll=on_poll)
    finally:
        world_call(settings, "DELETE", "/drift/fraud")
    if champion_version(settings) != champion:
        outcome = "the champion moved"
    quarantined = [e.payload.get("batch") for e in _of(seen, ev.QUALITY_ALERT)]
    return ActResult(
        *BROKEN_UPSTREAM,
        outcome,
        time.monotonic() - started,
        seen,
        {"quarantined_batches": [b for b in quarantined if b]},
    )
