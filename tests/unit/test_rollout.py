"""The rollout controller's ramp logic, driven by scripted verdicts (no router needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlsd import events as ev
from serving.admin import AdminError
from serving.rollout import RampPlan, run_ramp, step_decision, traffic_taken_from

PLAN = RampPlan(
    steps=(5.0, 50.0, 100.0), min_step_seconds=10.0, max_step_seconds=60.0, poll_seconds=5.0
)


class ScriptedAdmin:
    """Answers verdicts from a script per ramp step and records every call."""

    def __init__(
        self, script: dict[float, list[str]], fail: dict[str, BaseException] | None = None
    ):
        self.script = {k: list(v) for k, v in script.items()}
        self.percent = 0.0
        self.calls: list[tuple] = []
        self.fail = fail or {}  # call name -> what it raises
        # The router's routing as the controller reads it (verdicts carry it too).
        self.routing: dict = {"product": "fraud", "split": None, "challenger": None}

    def _maybe_fail(self, name):
        if name in self.fail:
            self.calls.append((f"{name} failed",))
            raise self.fail[name]

    def start_canary(self, product, percent, version):
        self._maybe_fail("start")
        self.percent = percent
        self.calls.append(("start", percent, version))
        self.routing = {
            "product": "fraud",
            "split": {"kind": "canary", "name": f"canary-fraud-v{version or 9}"},
            "challenger": version or 9,
        }
        return {"routing": self.routing}

    def start_shadow(self, product, version):
        self._maybe_fail("shadow start")
        self.percent = 0.0  # the script's key for the shadow's verdicts
        self.calls.append(("shadow start", version))
        self.routing = {
            "product": "fraud",
            "split": None,
            "shadow": True,
            "challenger": version or 9,
        }
        return {"routing": self.routing}

    def stop_shadow(self, product):
        self._maybe_fail("shadow stop")
        self.calls.append(("shadow stop",))
        self.routing = {**self.routing, "shadow": False}

    def set_percent(self, product, percent):
        self._maybe_fail("percent")
        self.percent = percent
        self.calls.append(("percent", percent))

    def status(self, product):
        return self.routing

    def verdict(self, product, window_seconds):
        if self.percent >= 50:
            self._maybe_fail("verdict")
        queue = self.script[self.percent]
        decision = queue.pop(0) if len(queue) > 1 else queue[0]
        return {
            "decision": decision,
            "reasons": [f"{decision} at {self.percent}"],
            "champion": {},
            "challenger": {},
            "routing": self.routing,
        }

    def promote(self, product, reason):
        self._maybe_fail("promote")
        self.calls.append(("promote", reason))

    def rollback(self, product, reason, challenger=None):
        self._maybe_fail("rollback")
        self.calls.append(("rollback", reason, challenger))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def drive(admin, version=7, notify=None, log=lambda _m: None, plan=PLAN):
    """Run the ramp against `admin` on a fake clock."""
    clock = FakeClock()
    return run_ramp(
        admin, "fraud", plan, version, clock=clock, sleep=clock.sleep, log=log, notify=notify
    )


def ramp(script, version=7, fail=None):
    admin = ScriptedAdmin(script, fail)
    return drive(admin, version), admin.calls


PASSING = {5.0: ["promote"], 50.0: ["promote"], 100.0: ["promote"]}


def test_every_step_passing_promotes_at_the_end():
    result, calls = ramp({5.0: ["hold", "promote"], 50.0: ["promote"], 100.0: ["promote"]})
    assert result["result"] == "promoted"
    # 100 % is the promotion itself: no arm would be left to compare against.
    assert [c[0] for c in calls] == ["start", "percent", "promote"]
    assert calls[0] == ("start", 5.0, 7)
    # A step lasts at least min_step_seconds even when the first verdict says promote.
    assert all(s["seconds"] >= PLAN.min_step_seconds for s in result["steps"])


def test_a_breach_rolls_back_at_once_and_never_promotes():
    result, calls = ramp({5.0: ["promote"], 50.0: ["rollback"], 100.0: ["promote"]})
    assert result["result"] == "rolled_back"
    assert calls[-1][0] == "rollback" and "50 %" in calls[-1][1]
    assert calls[-1][2] == 7  # names its challenger: can only withdraw it
    assert not any(c[0] == "promote" for c in calls)
    assert result["steps"][-1]["seconds"] == PLAN.poll_seconds  # at the first poll that saw it


def test_no_evidence_by_the_deadline_rolls_back():
    result, calls = ramp({5.0: ["hold"], 50.0: ["promote"], 100.0: ["promote"]})
    assert result["result"] == "rolled_back"
    assert "without enough evidence" in calls[-1][1]
    assert result["steps"][0]["seconds"] >= PLAN.max_step_seconds


@given(
    st.lists(st.sampled_from(["promote", "hold", "rollback"]), min_size=1, max_size=10),
    st.floats(0, 120),
)
def test_step_decision_rules(verdicts, elapsed):
    action = step_decision(verdicts, elapsed, PLAN.min_step_seconds, PLAN.max_step_seconds)
    if verdicts[-1] == "rollback":
        assert action == "rollback"
    elif verdicts[-1] == "promote" and elapsed >= PLAN.min_step_seconds:
        assert action == "next"
    elif elapsed >= PLAN.max_step_seconds:
        assert action == "rollback"
    else:
        assert action is None


@pytest.mark.parametrize("steps", [(), (50.0, 5.0, 100.0), (5.0, 50.0), (0.0, 100.0), (100.0,)])
def test_bad_ramps_are_refused(steps):
    with pytest.raises(ValueError):
        RampPlan(steps=steps)


# --- the controller failing mid-ramp withdraws its canary --------------------------------


@pytest.mark.parametrize(
    "fail",
    [
        {"verdict": ConnectionError("router unreachable")},
        {"verdict": KeyboardInterrupt()},
        {"promote": AdminError("POST", "/admin/fraud/promote", 502, "registry down")},
    ],
)
def test_a_controller_failure_withdraws_the_canary_and_reraises(fail):
    ((what, error),) = fail.items()
    admin = ScriptedAdmin(PASSING, fail)
    with pytest.raises(type(error)):
        drive(admin, 7)
    assert admin.calls[-2] == (f"{what} failed",)
    kind, reason, challenger = admin.calls[-1]
    assert (kind, challenger) == ("rollback", 7)
    assert "rollout controller failed" in reason and type(error).__name__ in reason
    assert not any(c[0] == "promote" for c in admin.calls)


def test_the_challenger_to_withdraw_is_the_one_the_router_started():
    # version None: the router picks @challenger (9 here); the abort must name that one
    admin = ScriptedAdmin(PASSING, {"verdict": TimeoutError()})
    with pytest.raises(TimeoutError):
        drive(admin, None)
    assert admin.calls[-1][0] == "rollback" and admin.calls[-1][2] == 9


def test_a_refused_start_withdraws_nothing():
    refused = AdminError("POST", "/admin/fraud/canary/start", 409, "a canary is running")
    admin = ScriptedAdmin(PASSING, {"start": refused})
    with pytest.raises(AdminError):
        drive(admin, 7)
    assert admin.calls == [("start failed",)]


@pytest.mark.parametrize("version, withdrawn", [(7, True), (None, False)])
def test_a_start_without_an_answer_withdraws_only_a_known_version(version, withdrawn):
    admin = ScriptedAdmin(PASSING, {"start": TimeoutError()})
    with pytest.raises(TimeoutError):
        drive(admin, version)
    rollbacks = [c for c in admin.calls if c[0] == "rollback"]
    assert rollbacks == ([("rollback", rollbacks[0][1], 7)] if withdrawn else [])


def test_a_failed_withdrawal_does_not_hide_the_original_error():
    fail = {
        "verdict": ConnectionError("router unreachable"),
        "rollback": AdminError("POST", "/admin/fraud/rollback", 409, "not taking traffic"),
    }
    messages: list[str] = []
    admin = ScriptedAdmin(PASSING, fail)
    with pytest.raises(ConnectionError, match="router unreachable"):
        drive(admin, log=messages.append)
    assert "no canary of v7 left to withdraw" in messages[-1]


def test_each_step_is_told_to_the_timeline_in_order():

    told: list[tuple[str, float | None]] = []
    for script, ending in (
        ({5.0: ["promote"], 50.0: ["promote"]}, ev.PROMOTED),
        ({5.0: ["hold", "rollback"]}, ev.ROLLED_BACK),
    ):
        told.clear()
        drive(
            ScriptedAdmin(script),
            notify=lambda name, payload: told.append((name, payload.get("percent"))),
        )
        names = [name for name, _ in told]
        assert names[0] == ev.CANARY_STEP_STARTED and told[0][1] == 5.0
        assert ending in names and all(n in ev.LAB_EVENTS for n in names)
        if ending == ev.PROMOTED:
            assert names.count(ev.CANARY_STEP_PASSED) == 2 and names[-1] == ev.ALIAS_MOVED
        else:
            assert names[-2:] == [ev.CANARY_STEP_BREACHED, ev.ROLLED_BACK]
            assert ev.PROMOTED not in names


# --- someone else takes the traffic: the controller stands aside -------------------------

EXPERIMENT = {"kind": "experiment", "name": "by-hand"}


# --- the judged shadow before the canary ---------------------------------------------------

# The shadow's least time differs from a step's (10 s), so a test sees which one was kept.
SHADOWED = replace(PLAN, shadow_seconds=20.0)


def test_a_shadow_that_passes_hands_over_to_the_canary_then_promotes():
    told: list[tuple[str, float | None]] = []
    admin = ScriptedAdmin({0.0: ["hold", "promote"], **PASSING})
    result = drive(admin, plan=SHADOWED, notify=lambda n, p: told.append((n, p.get("percent"))))
    assert result["result"] == "promoted"
    assert [c[0] for c in admin.calls] == [
        "shadow start",
        "shadow stop",
        "start",
        "percent",
        "promote",
    ]
    # The shadow lasted its own least time (20 s, not a step's 10) although its second poll
    # already said promote, then stopped before the canary began.
    assert result["steps"][0]["percent"] == 0 and result["steps"][0]["seconds"] == 20.0
    names = [n for n, _ in told]
    assert names[:3] == [ev.SHADOW_STARTED, ev.SHADOW_PASSED, ev.CANARY_STEP_STARTED]


def test_a_shadow_breach_rolls_back_before_any_caller_saw_an_answer():
    told: list[str] = []
    admin = ScriptedAdmin({0.0: ["hold", "rollback"], **PASSING})
    result = drive(admin, plan=SHADOWED, notify=lambda name, _p: told.append(name))
    assert result["result"] == "rolled_back"
    # Withdrawn by name, and no canary ever started: the challenger answered copies only.
    assert [c[0] for c in admin.calls] == ["shadow start", "rollback"]
    assert admin.calls[-1][2] == 7 and "shadow" in admin.calls[-1][1]
    assert told == [ev.SHADOW_STARTED, ev.SHADOW_BREACHED, ev.ROLLED_BACK]


def test_a_shadow_without_evidence_by_the_deadline_rolls_back():
    admin = ScriptedAdmin({0.0: ["hold"], **PASSING})
    result = drive(admin, plan=SHADOWED)
    assert result["result"] == "rolled_back" and "without enough evidence" in admin.calls[-1][1]
    assert not any(c[0] == "start" for c in admin.calls)


def test_a_controller_failure_in_the_shadow_withdraws_it():
    class Unreachable(ScriptedAdmin):
        def verdict(self, product, window_seconds):
            raise ConnectionError("router unreachable")

    admin = Unreachable(PASSING)
    with pytest.raises(ConnectionError):
        drive(admin, plan=SHADOWED)
    assert [c[0] for c in admin.calls] == ["shadow start", "rollback"]
    assert admin.calls[-1][2] == 7


def test_a_shadow_stopped_by_hand_ends_the_controller_quietly():
    class StoppedByHand(ScriptedAdmin):
        def verdict(self, product, window_seconds):
            self.routing = {"product": "fraud", "split": None, "shadow": False, "challenger": 7}
            return super().verdict(product, window_seconds)

    admin = StoppedByHand({0.0: ["hold"], **PASSING})
    result = drive(admin, plan=SHADOWED)
    assert result["result"] == "stood_aside" and "shadow of v7 was ended" in result["reason"]
    assert not any(c[0] in ("rollback", "promote", "start") for c in admin.calls)


def test_a_shadow_longer_than_the_deadline_is_refused():
    with pytest.raises(ValueError, match="shadow_seconds"):
        replace(PLAN, shadow_seconds=PLAN.max_step_seconds + 1)


@pytest.mark.parametrize(
    "routing, taken",
    [
        ({"split": None, "shadow": True, "challenger": 7}, None),  # our own shadow
        ({"split": None, "shadow": True, "challenger": 8}, "a shadow of v8 replaced"),
        ({"split": None, "shadow": False, "challenger": 7}, "shadow of v7 was ended"),
        ({"split": {"kind": "canary"}, "shadow": True, "challenger": 8}, "canary of v8 started"),
        ({"split": EXPERIMENT, "shadow": False, "challenger": 7}, "experiment by-hand"),
    ],
)
def test_whose_traffic_it_is_during_the_shadow(routing, taken):
    why = traffic_taken_from({"product": "fraud", **routing}, 7, started=True, shadow=True)
    assert (why is None) if taken is None else (taken in why)


@pytest.mark.parametrize(
    "routing, started, taken",
    [
        ({"split": None, "challenger": None}, False, None),  # nothing yet: the canary may start
        ({"split": {"kind": "canary"}, "challenger": 7}, True, None),  # our own canary
        ({"split": EXPERIMENT, "challenger": 7}, False, "experiment by-hand"),
        ({"split": EXPERIMENT, "challenger": 7}, True, "experiment by-hand"),
        ({"split": {"kind": "canary"}, "challenger": 8}, True, "a canary of v8"),
        ({"split": None, "challenger": None}, True, "ended outside the controller"),
    ],
)
def test_whose_traffic_it_is(routing, started, taken):
    why = traffic_taken_from({"product": "fraud", **routing}, 7, started=started)
    assert (why is None) if taken is None else (taken in why)


class ExperimentOnPoll(ScriptedAdmin):
    """A person starts an A/B experiment on the challenger at the n-th verdict."""

    def __init__(self, script, at_poll):
        super().__init__(script)
        self.polls, self.at_poll = 0, at_poll

    def verdict(self, product, window_seconds):
        self.polls += 1
        if self.polls == self.at_poll:
            self.routing = {"product": "fraud", "split": EXPERIMENT, "challenger": 7}
        return super().verdict(product, window_seconds)


@pytest.mark.parametrize("at_poll", [1, 3])  # in the first step, or in the second
def test_an_experiment_taking_the_traffic_mid_ramp_is_left_alone(at_poll):
    told: list[str] = []
    admin = ExperimentOnPoll(PASSING, at_poll)
    result = drive(admin, notify=lambda name, _payload: told.append(name))
    assert result["result"] == "stood_aside" and "experiment by-hand" in result["reason"]
    # Neither withdrawn nor promoted: the experiment keeps the challenger and its traffic.
    assert not any(c[0] in ("rollback", "promote") for c in admin.calls)
    assert told[-1] == ev.ROLLOUT_STOOD_ASIDE
    assert len(result["steps"]) == (0 if at_poll == 1 else 1)


def test_a_refused_start_over_an_experiment_stands_aside_and_withdraws_nothing():
    refused = AdminError("POST", "/admin/fraud/canary/start", 409, "runs experiment by-hand")
    admin = ScriptedAdmin(PASSING, {"start": refused})
    admin.routing = {"product": "fraud", "split": EXPERIMENT, "challenger": 7}
    result = drive(admin)
    assert result["result"] == "stood_aside"
    assert admin.calls == [("start failed",)]


def test_a_canary_rolled_back_by_hand_mid_ramp_ends_the_controller_quietly():
    # The next step's PUT is refused (409: no canary running) because a person rolled it back.
    class RolledBackByHand(ScriptedAdmin):
        def set_percent(self, product, percent):
            self.routing = {"product": "fraud", "split": None, "challenger": None}
            raise AdminError("PUT", "/admin/fraud/canary", 409, "fraud has no canary running")

    admin = RolledBackByHand(PASSING)
    result = drive(admin)
    assert result["result"] == "stood_aside" and "ended outside" in result["reason"]
    assert not any(c[0] in ("rollback", "promote") for c in admin.calls)


def test_a_409_while_the_canary_is_still_ours_is_a_fault():
    # The router refuses the next step but still shows our canary: that is no hand-over.
    refused = AdminError("PUT", "/admin/fraud/canary", 409, "something odd")
    admin = ScriptedAdmin(PASSING, {"percent": refused})
    with pytest.raises(AdminError):
        drive(admin)
    assert admin.calls[-1][0] == "rollback" and admin.calls[-1][2] == 7


def test_a_stage_that_holds_says_what_it_waits_for():
    messages: list[str] = []
    drive(ScriptedAdmin({**PASSING, 5.0: ["hold"] * 5 + ["promote"]}), log=messages.append)
    held = [m for m in messages if "holds" in m]
    # The fifth poll held: its reasons (the scripted "hold at 5.0") are told once.
    assert held == ["fraud: 5 % step holds: hold at 5.0"]


def test_an_experiment_started_during_the_shadow_stops_its_copies_and_is_left_alone():
    class ExperimentDuringShadow(ScriptedAdmin):
        def verdict(self, product, window_seconds):
            # A split does not end a shadow in the router: the copies would go on.
            self.routing = {
                "product": "fraud",
                "split": EXPERIMENT,
                "shadow": True,
                "challenger": 7,
            }
            return super().verdict(product, window_seconds)

    admin = ExperimentDuringShadow({0.0: ["hold"], **PASSING})
    result = drive(admin, plan=SHADOWED)
    assert result["result"] == "stood_aside" and "experiment by-hand" in result["reason"]
    assert [c[0] for c in admin.calls] == ["shadow start", "shadow stop"]  # copies stopped only


def test_a_shadow_start_without_an_answer_withdraws_a_known_version():
    admin = ScriptedAdmin(PASSING, {"shadow start": TimeoutError()})
    with pytest.raises(TimeoutError):
        drive(admin, plan=SHADOWED)
    assert admin.calls[-1][0] == "rollback" and admin.calls[-1][2] == 7


def test_a_failed_shadow_stop_withdraws_the_challenger_before_the_error_goes_on():
    stop = AdminError("POST", "/admin/fraud/shadow/stop", 502, "router busy")
    admin = ScriptedAdmin({0.0: ["promote"], **PASSING}, {"shadow stop": stop})
    with pytest.raises(AdminError):
        drive(admin, plan=SHADOWED)
    assert admin.calls[-1][0] == "rollback" and admin.calls[-1][2] == 7
    assert not any(c[0] == "start" for c in admin.calls)


def test_a_passed_stage_is_told_with_the_figures_it_was_judged_on():
    class WithChecks(ScriptedAdmin):
        def verdict(self, product, window_seconds):
            answer = super().verdict(product, window_seconds)
            answer["checks"] = [
                {"name": "alert_rate", "status": "pass", "detail": "challenger 3/427 vs 3/429"},
                {"name": "p99_latency", "status": "skipped", "detail": "a shadow's copies"},
            ]
            return answer

    messages: list[str] = []
    drive(WithChecks({0.0: ["promote"], **PASSING}), plan=SHADOWED, log=messages.append)
    passed = next(m for m in messages if "shadow passed" in m)
    assert passed.endswith("alert_rate challenger 3/427 vs 3/429")  # the skipped one is not told
