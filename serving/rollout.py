"""The `rollout` Prefect flow: shadow a challenger, then ramp it through canary steps, judge the
shadow and each step with `serving.canary.canary_verdict` on both arms over the same window,
then promote or roll back.

The controller only drives the router's admin API: the router holds the routing state and the
prediction log, the registry holds the aliases. A breached guardrail rolls back at once; a step
without enough evidence by its deadline rolls back too (no evidence, no promotion).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger

import mlsd.events as events
from serving.admin import AdminClient, AdminError

DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)
# A stage that holds says why every this many polls (the evidence it still lacks).
HOLD_LOG_POLLS = 5
# The figures a passed stage is told with: what a person asks when a bad model got through.
JUDGED_AT_PASS = ("error_rate", "alert_rate", "score_distribution")


@dataclass(frozen=True)
class RampPlan:
    """How fast to ramp. Each step below 100 % lasts at least `min_step_seconds` and at most
    `max_step_seconds`; its verdict covers only the traffic since the step began. The final
    100 % is the promotion."""

    steps: tuple[float, ...] = DEFAULT_STEPS
    min_step_seconds: float = 30.0
    max_step_seconds: float = 300.0
    poll_seconds: float = 5.0
    # A judged shadow before the canary, lasting at least this (0: none); see _Ramp.run.
    shadow_seconds: float = 0.0

    def __post_init__(self) -> None:
        if (
            not self.steps
            or list(self.steps) != sorted(self.steps)
            or not 0 < self.steps[0] <= self.steps[-1] <= 100
        ):
            raise ValueError(f"ramp steps must rise within (0, 100]: {self.steps}")
        if self.steps[-1] != 100 or len(self.steps) < 2:
            raise ValueError(
                "a ramp ends at 100 % (the promotion) after at least one judged step below it"
            )
        if not 0 < self.min_step_seconds <= self.max_step_seconds:
            raise ValueError("need 0 < min_step_seconds <= max_step_seconds")
        if not 0 <= self.shadow_seconds <= self.max_step_seconds:
            raise ValueError("need 0 <= shadow_seconds <= max_step_seconds")


@dataclass
class StepOutcome:
    percent: float
    decision: str
    seconds: float
    reasons: list[str]
    arms: dict[str, Any] = field(default_factory=dict)


def step_decision(
    verdicts: Sequence[str], elapsed: float, least_seconds: float, deadline_seconds: float
) -> str | None:
    """What the controller does after a poll of a stage (the shadow or a canary step):
    'rollback' at once on a breach, 'next' once the stage has lasted `least_seconds` and the
    latest verdict is 'promote', 'rollback' when `deadline_seconds` pass without that, else None
    (keep waiting). Pure, so the ramp's logic is tested alone."""
    if not verdicts:
        return None
    latest = verdicts[-1]
    if latest == "rollback":
        return "rollback"
    if elapsed >= least_seconds and latest == "promote":
        return "next"
    if elapsed >= deadline_seconds:
        return "rollback"
    return None


def traffic_taken_from(
    routing: dict[str, Any], version: int | None, *, started: bool, shadow: bool = False
) -> str | None:
    """Why the controller of `version`'s rollout must stand aside, or None while it may go on.

    Before it starts, only an A/B experiment stops it (the router refuses a canary over one: an
    experiment is a person's decision, a canary a controller's). Once started, anything that is
    not its own shadow (`shadow`) or canary does: an experiment that replaced it, another
    canary, or a rollback by hand. Pure, so the rule is tested alone."""
    split = routing.get("split") or {}
    challenger = routing.get("challenger")
    product = routing.get("product", "the product")
    if split.get("kind") == "experiment":
        return f"experiment {split.get('name')} holds {product}'s traffic (v{challenger})"
    if not started:
        return None
    if shadow:
        if split.get("kind") == "canary":
            return f"a canary of v{challenger} started over the shadow of v{version}"
        if routing.get("shadow") and challenger == version:
            return None
        if routing.get("shadow"):
            return f"a shadow of v{challenger} replaced the shadow of v{version}"
        return f"the shadow of v{version} was ended outside the controller"
    if split.get("kind") == "canary" and challenger == version:
        return None
    if split.get("kind") == "canary":
        return f"a canary of v{challenger} replaced the canary of v{version}"
    return f"the canary of v{version} was ended outside the controller"


class _StoodAside(Exception):
    """The product's traffic is no longer the controller's to ramp (see traffic_taken_from)."""


def run_ramp(
    admin: AdminClient,
    product: str,
    plan: RampPlan,
    version: int | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
    notify: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Drive the shadow (when the plan has one) and the canary through the plan; returns the
    outcome with every stage's evidence (the shadow's at percent 0).

    The shadow and every step below 100 % are judged, champion against challenger over the same window; 100 %
    is the promotion itself (at 100 % no champion traffic would be left to compare against).

    If the controller itself fails mid-ramp (the router unreachable, a verdict it cannot read,
    a refused promotion, an interrupt), it withdraws its shadow or canary before the error goes on: a
    challenger nobody judges any more must not keep its share of traffic. The withdrawal names
    the challenger, so it can never restore an older champion instead.

    If someone else takes the traffic (an A/B experiment started by hand, a rollback by hand),
    the controller stands aside: it touches nothing and says so (result "stood_aside").
    """
    ramp = _Ramp(admin, product, version, notify=notify or (lambda _name, _payload: None))
    try:
        return ramp.run(plan, clock, sleep, log)
    except _StoodAside as err:
        return ramp.stand_aside(str(err), log)
    except AdminError as err:
        # A 409 mid-ramp: is the traffic still ours? If not, the refusal is why.
        why = ramp.taken_by_someone_else() if err.status_code == 409 else None
        if why is not None:
            return ramp.stand_aside(why, log)
        ramp.abort(f"rollout controller failed: {type(err).__name__}: {err}", log)
        raise
    except BaseException as err:
        ramp.abort(f"rollout controller failed: {type(err).__name__}: {err}", log)
        raise


@dataclass
class _Ramp:
    admin: AdminClient
    product: str
    version: int | None
    started: bool = False
    in_shadow: bool = False  # its challenger answers copies only (the judged shadow)
    # Told of each step (an event name of mlsd.events and its payload): the loop's timeline.
    notify: Callable[[str, dict[str, Any]], None] = lambda _name, _payload: None
    steps: list[StepOutcome] = field(default_factory=list)

    def run(
        self,
        plan: RampPlan,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        log: Callable[[str], None],
    ) -> dict[str, Any]:
        """The judged shadow (when the plan has one), then each canary step, then promotion.

        The shadow is judged by the same guardrails as a canary step, on copies of every
        request, so a challenger that errs, or scores or blocks unlike both the champion and its
        own training data, is rolled back before any caller sees one of its answers; and the
        evidence a 5 % step would gather in min_requests / (5 % of the rate) comes at the whole
        rate. Latency alone waits for the canary: a copy's latency is a batch call's."""
        admin, product = self.admin, self.product
        if plan.shadow_seconds > 0:
            self.start_shadow()
            log(f"{product}: shadow of v{self.version}, judged like a canary step")
            self.notify(events.SHADOW_STARTED, {"version": self.version, "percent": 0})
            ended = self.judge(0.0, plan.shadow_seconds, plan, clock, sleep, log)
            if ended is not None:
                return ended
            admin.stop_shadow(product)
            self.started = self.in_shadow = False
        for index, percent in enumerate(p for p in plan.steps if p < 100):
            if index == 0:
                self.start(percent)
            else:
                admin.set_percent(product, percent)
            log(f"{product}: canary of v{self.version} at {percent:g} %")
            self.notify(
                events.CANARY_STEP_STARTED,
                {"version": self.version, "step": index + 1, "percent": percent},
            )
            ended = self.judge(percent, plan.min_step_seconds, plan, clock, sleep, log)
            if ended is not None:
                return ended
        answer = admin.promote(product, f"canary passed every step {list(plan.steps)}")
        self.started = False
        log(f"{product}: promoted")
        self.notify(events.PROMOTED, {"version": self.version, "steps": list(plan.steps)})
        self.notify(
            events.ALIAS_MOVED,
            {
                "alias": "champion",
                "to_version": (answer or {}).get("routing", {}).get("champion", self.version),
                "version": self.version,
            },
        )
        return {"product": product, "result": "promoted", "steps": [s.__dict__ for s in self.steps]}

    def judge(
        self,
        percent: float,
        least_seconds: float,
        plan: RampPlan,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        log: Callable[[str], None],
    ) -> dict[str, Any] | None:
        """Poll the verdict of the stage now running (the shadow at percent 0, or a canary
        step) until `step_decision` acts: None when it passed, the rolled-back result when not."""
        stage = "shadow" if percent == 0 else f"{percent:g} % step"
        began = clock()
        verdicts: list[str] = []
        while True:
            sleep(plan.poll_seconds)
            elapsed = clock() - began
            verdict = self.admin.verdict(self.product, elapsed)
            why = traffic_taken_from(
                verdict["routing"], self.version, started=True, shadow=self.in_shadow
            )
            if why is not None:  # the window is someone else's now: judge nothing
                raise _StoodAside(why)
            verdicts.append(verdict["decision"])
            action = step_decision(verdicts, elapsed, least_seconds, plan.max_step_seconds)
            if action is not None:
                break
            if len(verdicts) % HOLD_LOG_POLLS == 0:  # what it waits for, now and then
                log(f"{self.product}: {stage} holds: {'; '.join(verdict['reasons'])}")
        outcome = StepOutcome(
            percent,
            verdict["decision"],
            round(elapsed, 1),
            list(verdict["reasons"]),
            {"champion": verdict.get("champion"), "challenger": verdict.get("challenger")},
        )
        self.steps.append(outcome)
        if action == "next":
            judged = "; ".join(
                f"{c['name']} {c['detail']}"
                for c in verdict.get("checks", ())
                if c.get("status") == "pass" and c.get("name") in JUDGED_AT_PASS
            )
            log(f"{self.product}: {stage} passed after {elapsed:.0f} s: {judged or 'no figures'}")
            self.notify(
                events.SHADOW_PASSED if percent == 0 else events.CANARY_STEP_PASSED,
                {"version": self.version, "percent": percent, "seconds": round(elapsed, 1)},
            )
            return None
        why = "; ".join(outcome.reasons) or "no promote verdict before the deadline"
        if verdict["decision"] != "rollback":
            why = f"{stage} ended without enough evidence: {why}"
        log(f"{self.product}: rollback at the {stage}: {why}")
        self.notify(
            events.SHADOW_BREACHED if percent == 0 else events.CANARY_STEP_BREACHED,
            {"version": self.version, "percent": percent, "reason": why[:300]},
        )
        where = (
            "rolled back in its shadow" if percent == 0 else f"canary rolled back at {percent:g} %"
        )
        self.admin.rollback(self.product, f"{where}: {why}", self.version)
        self.started = self.in_shadow = False
        self.notify(
            events.ROLLED_BACK, {"version": self.version, "percent": percent, "reason": why[:300]}
        )
        return {
            "product": self.product,
            "result": "rolled_back",
            "steps": [s.__dict__ for s in self.steps],
        }

    def start_shadow(self) -> None:
        self.begin(lambda: self.admin.start_shadow(self.product, self.version), shadow=True)

    def start(self, percent: float) -> None:
        self.begin(lambda: self.admin.start_canary(self.product, percent, self.version))

    def begin(self, call: Callable[[], dict[str, Any]], shadow: bool = False) -> None:
        """Start the shadow or the canary through `call`; from then on it is ours to withdraw."""
        try:
            answer = call()
        except AdminError:
            raise  # the router refused: nothing started
        except BaseException:
            # No answer (timeout, connection lost): it may have started. Withdraw it if we
            # know its version; without one we cannot tell ours from someone else's.
            self.started = self.version is not None
            self.in_shadow = shadow and self.started
            raise
        self.started, self.in_shadow = True, shadow
        self.version = int(answer["routing"]["challenger"])

    def taken_by_someone_else(self) -> str | None:
        """After a refusal: the reason the traffic is not ours any more, or None when it still
        is (or the router cannot say), so the refusal is a fault."""
        try:
            routing = self.admin.status(self.product)
        except Exception:
            return None
        return traffic_taken_from(
            routing, self.version, started=self.started, shadow=self.in_shadow
        )

    def stand_aside(self, reason: str, log: Callable[[str], None]) -> dict[str, Any]:
        if self.in_shadow:
            self.end_own_shadow(log)
        self.started = self.in_shadow = False
        log(f"{self.product}: the rollout of v{self.version} stands aside: {reason}")
        self.notify(events.ROLLOUT_STOOD_ASIDE, {"version": self.version, "reason": reason[:300]})
        return {
            "product": self.product,
            "result": "stood_aside",
            "reason": reason,
            "steps": [s.__dict__ for s in self.steps],
        }

    def end_own_shadow(self, log: Callable[[str], None]) -> None:
        """Best effort, standing aside mid-shadow: an experiment or canary that took the
        traffic left our shadow's copies running (a split does not end a shadow); stop them.
        A shadow someone started instead of ours (no split) is theirs: left alone."""
        try:
            routing = self.admin.status(self.product)
            if routing.get("shadow") and routing.get("split"):
                self.admin.stop_shadow(self.product)
                log(f"{self.product}: the shadow of v{self.version} stopped")
        except Exception as err:
            log(f"{self.product}: could not stop the shadow of v{self.version}: {err}")

    def abort(self, reason: str, log: Callable[[str], None]) -> None:
        """Best effort: withdraw our shadow or canary if it is still in traffic; never raises
        (the original error is the one to report)."""
        challenger = self.version
        what = "shadow" if self.in_shadow else "canary"
        if not self.started or challenger is None:
            return
        try:
            self.admin.rollback(self.product, reason, challenger)
            log(f"{self.product}: {what} of v{challenger} withdrawn: {reason}")
        except AdminError as err:
            if err.status_code == 409:  # not in traffic: nothing of ours is left to withdraw
                log(f"{self.product}: no {what} of v{challenger} left to withdraw")
            else:
                log(f"{self.product}: could not withdraw the {what} of v{challenger}: {err}")
        except Exception as err:
            log(f"{self.product}: could not withdraw the {what} of v{challenger}: {err}")


@flow(name="rollout", log_prints=True)
def rollout(
    product: str,
    router_url: str | None = None,
    admin_token: str | None = None,
    version: int | None = None,
    steps: list[float] | None = None,
    min_step_seconds: float = 30.0,
    max_step_seconds: float = 300.0,
    poll_seconds: float = 5.0,
    shadow_seconds: float = 0.0,
) -> dict[str, Any]:
    """Shadow `product`'s challenger (or `version`) for at least `shadow_seconds`, judged, then
    canary-ramp it and promote it or roll it back; every step is an event of the timeline."""
    from mlsd.settings import Settings

    plan = RampPlan(
        tuple(steps or DEFAULT_STEPS),
        min_step_seconds,
        max_step_seconds,
        poll_seconds,
        shadow_seconds,
    )
    logger = get_run_logger()
    if router_url and admin_token:
        admin = AdminClient(router_url, admin_token)
    else:
        admin = AdminClient.for_lab(Settings())
    notify = timeline_notifier(product, version)
    with admin:
        ramp = _Ramp(admin, product, version, notify=notify)
        if (why := ramp.taken_by_someone_else()) is not None:
            return ramp.stand_aside(why, logger.info)
        return run_ramp(admin, product, plan, version, log=logger.info, notify=notify)


def timeline_notifier(product: str, version: int | None) -> Callable[[str, dict[str, Any]], None]:
    """Emit each rollout step as a lab event on `mlsd.model.<product>` (best effort: a lost
    event never stops a rollout)."""

    def notify(name: str, payload: dict[str, Any]) -> None:
        v = payload.get("version") or version
        related = [events.version_related(product, v)] if v is not None else None
        try:
            events.emit(name, events.model_resource(product), payload, related)
        except Exception as err:
            print(f"could not emit {name}: {err}")

    return notify
