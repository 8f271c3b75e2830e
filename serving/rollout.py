"""The `rollout` Prefect flow: ramp a challenger through canary steps, judge each step with
`serving.traffic.canary_verdict` on both arms over the same window, then promote or roll back.

The controller only drives the router's admin API: the router holds the routing state and the
prediction log, the registry holds the aliases. A breached guardrail rolls back at once; a step
without enough evidence by its deadline rolls back too (no evidence, no promotion).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect import flow, get_run_logger

DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)


@dataclass(frozen=True)
class RampPlan:
    """How fast to ramp. Each step below 100 % lasts at least `min_step_seconds` and at most
    `max_step_seconds`; its verdict covers only the traffic since the step began. The final
    100 % is the promotion."""

    steps: tuple[float, ...] = DEFAULT_STEPS
    min_step_seconds: float = 30.0
    max_step_seconds: float = 300.0
    poll_seconds: float = 5.0

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


@dataclass
class StepOutcome:
    percent: float
    decision: str
    seconds: float
    reasons: list[str]
    arms: dict[str, Any] = field(default_factory=dict)


def step_decision(verdicts: Sequence[str], elapsed: float, plan: RampPlan) -> str | None:
    """What the controller does after a poll: 'rollback' at once on a breach, 'next' once the
    step has lasted long enough and the latest verdict is 'promote', 'rollback' when the deadline
    passes without that, else None (keep waiting). Pure, so the ramp's logic is tested alone."""
    if not verdicts:
        return None
    latest = verdicts[-1]
    if latest == "rollback":
        return "rollback"
    if elapsed >= plan.min_step_seconds and latest == "promote":
        return "next"
    if elapsed >= plan.max_step_seconds:
        return "rollback"
    return None


class AdminClient:
    """The router's admin API, as the controller uses it."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    @classmethod
    def for_lab(cls, settings: Any) -> AdminClient:
        """The lab's own router, with the admin token kept under its data dir."""
        from serving.router import admin_token

        return cls(f"http://{settings.client_host}:{settings.router.port}", admin_token(settings))

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return dict(response.json())

    def start_canary(self, product: str, percent: float, version: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"percent": percent}
        if version is not None:
            body["version"] = version
        return self.call("POST", f"/admin/{product}/canary/start", json=body)

    def set_percent(self, product: str, percent: float) -> dict[str, Any]:
        return self.call("PUT", f"/admin/{product}/canary", json={"percent": percent})

    def verdict(self, product: str, window_seconds: float) -> dict[str, Any]:
        return self.call(
            "GET",
            f"/admin/{product}/canary/verdict",
            params={"window_seconds": max(window_seconds, 1.0)},
        )

    def promote(self, product: str, reason: str) -> dict[str, Any]:
        return self.call("POST", f"/admin/{product}/promote", json={"reason": reason[:300]})

    def rollback(self, product: str, reason: str) -> dict[str, Any]:
        return self.call("POST", f"/admin/{product}/rollback", json={"reason": reason[:300]})

    def status(self, product: str) -> dict[str, Any]:
        return self.call("GET", f"/admin/{product}/status")


def run_ramp(
    admin: AdminClient,
    product: str,
    plan: RampPlan,
    version: int | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Drive the canary through the plan; returns the outcome with every step's evidence.

    Every step below 100 % is judged, champion against challenger over the same window; 100 %
    is the promotion itself (at 100 % no champion traffic would be left to compare against).
    """
    steps: list[StepOutcome] = []
    for index, percent in enumerate(p for p in plan.steps if p < 100):
        if index == 0:
            admin.start_canary(product, percent, version)
        else:
            admin.set_percent(product, percent)
        log(f"{product}: canary at {percent:g} %")
        began = clock()
        verdicts: list[str] = []
        while True:
            sleep(plan.poll_seconds)
            elapsed = clock() - began
            verdict = admin.verdict(product, elapsed)
            verdicts.append(verdict["decision"])
            action = step_decision(verdicts, elapsed, plan)
            if action is None:
                continue
            outcome = StepOutcome(
                percent,
                verdict["decision"],
                round(elapsed, 1),
                list(verdict["reasons"]),
                {"champion": verdict.get("champion"), "challenger": verdict.get("challenger")},
            )
            steps.append(outcome)
            if action == "rollback":
                why = "; ".join(outcome.reasons) or "no promote verdict before the step's deadline"
                if verdict["decision"] != "rollback":
                    why = f"step at {percent:g} % ended without enough evidence: {why}"
                log(f"{product}: rollback at {percent:g} %: {why}")
                admin.rollback(product, f"canary rolled back at {percent:g} %: {why}")
                return {
                    "product": product,
                    "result": "rolled_back",
                    "steps": [s.__dict__ for s in steps],
                }
            log(f"{product}: step {percent:g} % passed after {elapsed:.0f} s")
            break
    admin.promote(product, f"canary passed every step {list(plan.steps)}")
    log(f"{product}: promoted")
    return {"product": product, "result": "promoted", "steps": [s.__dict__ for s in steps]}


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
) -> dict[str, Any]:
    """Canary-ramp `product`'s challenger (or `version`) and promote it or roll it back."""
    from mlsd.settings import Settings

    plan = RampPlan(tuple(steps or DEFAULT_STEPS), min_step_seconds, max_step_seconds, poll_seconds)
    logger = get_run_logger()
    if router_url and admin_token:
        admin = AdminClient(router_url, admin_token)
    else:
        admin = AdminClient.for_lab(Settings())
    return run_ramp(admin, product, plan, version, log=logger.info)
