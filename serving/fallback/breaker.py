"""Circuit breakers: skip a model version whose recent calls mostly fail, one trial call
after a cooldown; one breaker per model name."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class CircuitBreaker:
    """Skips a model whose recent calls mostly fail: open when at least `min_calls` of the last
    `window` calls were made and `failure_rate` of them failed; after `cooldown_s`, one trial
    call goes through (half-open): a success closes the circuit with a clean slate, a failure
    opens it again. A failure *rate*, not a run of failures: at a few hundred requests a second
    a busy model times out a few calls in a row now and then, and skipping it for the whole
    cooldown would degrade far more answers than the timeouts did.

    Only the trial's own answer decides the half-open state: at hundreds of requests a second,
    calls let through before the circuit opened are still answering after it opened, and
    their (old) news must neither close it nor restart its cooldown."""

    window: int
    min_calls: int
    failure_rate: float
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    min_failing_s: float = 0.0  # how long failures must have gone on before it opens
    outcomes: deque[bool] = field(default_factory=deque)  # True: the call failed
    opened_at: float | None = None
    trial_running: bool = False
    failing_since: float | None = None  # since when the window's failure rate is over the bar

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> Literal["call", "trial"] | None:
        """Whether a call may go: "call" (closed), "trial" (the half-open probe), None."""
        state = self.state
        if state == "closed":
            return "call"
        if state == "half_open" and not self.trial_running:
            self.trial_running = True
            return "trial"
        return None

    def record_success(self, trial: bool = False) -> None:
        if trial:  # the trial call answered: start afresh
            self.outcomes.clear()
            self.opened_at, self.trial_running = None, False
        elif self.opened_at is not None:
            return  # a call from before the circuit opened
        self._record(False)

    def record_failure(self, trial: bool = False) -> None:
        if trial:  # the trial call failed: wait another cooldown
            self.opened_at, self.trial_running = self.clock(), False
            return
        if self.opened_at is not None:
            return  # a call from before the circuit opened
        self._record(True)
        now = self.clock()
        if self.failing_since is not None and now - self.failing_since >= self.min_failing_s:
            self.opened_at = now

    def abandon(self, trial: bool) -> None:
        """A call that ended without an answer either way (cancelled): a trial frees its slot."""
        if trial:
            self.trial_running = False

    def _record(self, failed: bool) -> None:
        self.outcomes.append(failed)
        while len(self.outcomes) > self.window:
            self.outcomes.popleft()
        # The rate, not a run: a model failing most calls, with successes between, is failing.
        over = len(self.outcomes) >= self.min_calls and sum(self.outcomes) >= (
            self.failure_rate * len(self.outcomes)
        )
        if not over:
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = self.clock()


@dataclass
class Breakers:
    """One circuit breaker per model name, all with the same policy."""

    window: int
    min_calls: int
    failure_rate: float
    cooldown_s: float
    min_failing_s: float = 0.0
    by_model: dict[str, CircuitBreaker] = field(default_factory=dict)

    def __getitem__(self, model: str) -> CircuitBreaker:
        breaker = self.by_model.get(model)
        if breaker is None:
            breaker = self.by_model[model] = CircuitBreaker(
                self.window,
                self.min_calls,
                self.failure_rate,
                self.cooldown_s,
                min_failing_s=self.min_failing_s,
            )
        return breaker

    def states(self) -> dict[str, str]:
        return {model: b.state for model, b in sorted(self.by_model.items())}
