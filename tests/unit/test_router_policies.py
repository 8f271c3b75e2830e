"""The router's smaller policies: routing-state transitions, circuit breakers, the fallback chain,
decoding model answers, the rule and popularity fallbacks, and V2 request encoding."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlsd.settings import Settings
from serving import routing_state as rs
from serving.fallback import (
    Breakers,
    CircuitBreaker,
    Hop,
    PopularityList,
    first_answer,
    fraud_answer_from_outputs,
    recs_answer_from_outputs,
    request_only_answer,
    rule_answer,
)
from serving.upstream import UpstreamError, v2_datatype, v2_outputs, v2_request

# --- routing state ---------------------------------------------------------------------------


def fraud(**kw) -> rs.ProductRouting:
    return rs.ProductRouting(product="fraud", **kw)


def test_canary_then_promote_then_rollback_restores_the_champion():
    state = rs.start_canary(fraud(champion=3), 4, 5)
    assert state.split is not None and state.split.name == "canary-fraud-v4"
    state = rs.set_canary_percent(state, 50)
    assert state.split is not None and state.split.challenger_percent == 50
    state = rs.promote(state, "all green")
    assert (state.champion, state.previous, state.challenger, state.split) == (4, 3, None, None)
    assert rs.rollback_kind(state) == "champion_restored"
    state = rs.rollback(state)
    assert (state.champion, state.previous) == (3, None)
    assert [e.action for e in state.history] == [
        "canary_started",
        "canary_percent",
        "promoted",
        "champion_restored",
    ]
    assert state.history[2].detail == "v4 replaces v3: all green"


def test_rollback_prefers_withdrawing_a_challenger_in_traffic():
    shadowing = rs.start_shadow(fraud(champion=3, previous=2), 4)
    assert rs.rollback_kind(shadowing) == "challenger_withdrawn"
    state = rs.rollback(shadowing, "bad shadow scores")
    assert (state.champion, state.challenger, state.shadow, state.previous) == (3, None, False, 2)
    with pytest.raises(rs.RoutingConflict, match="no previous champion"):
        rs.rollback(fraud(champion=3))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rs.start_canary(fraud(), 4, 5), "no champion"),
        (lambda: rs.start_canary(fraud(champion=4), 4, 5), "already the fraud champion"),
        (lambda: rs.set_canary_percent(fraud(champion=3), 5), "no canary"),
        (lambda: rs.stop_shadow(fraud(champion=3)), "no shadow"),
        (lambda: rs.stop_split(fraud(champion=3)), "no split"),
        (lambda: rs.promote(fraud(champion=3)), "no challenger"),
        (
            lambda: rs.start_shadow(rs.start_canary(fraud(champion=3), 4, 5), 5),
            "stop it before shadowing v5",
        ),
    ],
)
def test_transitions_that_do_not_fit_are_conflicts(call, message):
    with pytest.raises(rs.RoutingConflict, match=message):
        call()


def test_an_experiment_replaces_a_canary_and_is_salted_by_its_name():
    state = rs.start_canary(fraud(champion=3), 4, 5)
    state = rs.start_experiment(state, "ab-7", "precision", 50, 4)
    assert state.split is not None and (state.split.kind, state.split.name) == (
        "experiment",
        "ab-7",
    )
    with pytest.raises(rs.RoutingConflict):
        rs.set_canary_percent(state, 10)


def test_registry_sync_adopts_set_aliases_and_never_clears_or_interrupts():
    idle = fraud(champion=3)
    synced = rs.sync_with_registry(idle, {"champion": 5, "challenger": 6, "previous": 3})
    assert (synced.champion, synced.challenger, synced.previous) == (5, 6, 3)
    assert synced.history[-1].action == "registry_sync"
    # A registry that knows nothing (down, or an untrained product) changes nothing.
    assert rs.sync_with_registry(synced, {}) is synced
    canary = rs.start_canary(fraud(champion=3), 4, 25)
    assert rs.sync_with_registry(canary, {"champion": 3, "challenger": 4}) is canary
    # A canary of a version chosen by number survives another @challenger.
    kept = rs.sync_with_registry(canary, {"champion": 3, "challenger": 7})
    assert kept is canary
    # Promoted elsewhere: the canary is over.
    done = rs.sync_with_registry(canary, {"champion": 4, "previous": 3})
    assert (done.champion, done.challenger, done.split, done.previous) == (4, None, None, 3)


def test_the_store_survives_a_restart_and_a_corrupt_file(tmp_path: Path):
    path = tmp_path / "routing.json"
    store = rs.RoutingStore(path)
    store.put(rs.start_shadow(fraud(champion=3), 4))
    again = rs.RoutingStore(path)
    assert again["fraud"].shadow and again["fraud"].challenger == 4
    assert again["recsys"].champion is None
    path.write_text("{not json")
    assert rs.RoutingStore(path)["fraud"].champion is None


def test_history_is_bounded():
    state = fraud(champion=1)
    for _ in range(rs.HISTORY_KEEP + 20):
        state = rs.stop_shadow(rs.start_shadow(state, 2))
    assert len(state.history) == rs.HISTORY_KEEP


# --- circuit breaker and the chain -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, window: int = 10, min_calls: int = 4) -> CircuitBreaker:
    return CircuitBreaker(window, min_calls, failure_rate=0.5, cooldown_s=5, clock=clock)


def test_circuit_opens_on_a_failure_rate_and_half_opens_after_cooldown():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):  # below min_calls: never opens, however bad
        b.record_failure()
    assert b.state == "closed"
    b.record_failure()  # 4 of 4 failed
    assert b.state == "open" and not b.allow()
    clock.now = 5.0
    assert b.state == "half_open"
    assert b.allow() == "trial" and b.allow() is None  # one trial call at a time
    b.record_failure(trial=True)
    assert b.state == "open"
    clock.now = 10.0
    assert b.allow() == "trial"
    b.record_success(trial=True)  # the trial answered: closed, with a clean slate
    assert b.state == "closed" and list(b.outcomes) == [False]


def test_answers_of_calls_from_before_the_circuit_opened_decide_nothing():
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record_failure()
    assert b.state == "open"
    clock.now = 1.0
    b.record_success()  # a call still in flight when it opened
    assert b.state == "open"
    clock.now = 4.0
    b.record_failure()  # nor does a late failure restart the cooldown
    clock.now = 5.0
    assert b.state == "half_open" and b.allow() == "trial"
    b.record_success()  # not the trial: the probe is still out
    assert b.state == "half_open" and b.allow() is None
    b.abandon(trial=True)  # the trial was cancelled: another may go
    assert b.allow() == "trial"
    b.record_success(trial=True)
    assert b.state == "closed"


def test_a_few_failures_in_a_row_among_successes_do_not_open_it():
    b = breaker(Clock())
    for i in range(100):
        # 4 failures in a row every 20 calls: at most 40 % of any 10, under the 50 % bar.
        if i % 20 >= 16:
            b.record_failure()
        else:
            b.record_success()
        assert b.state == "closed", i


def test_a_short_stall_does_not_open_it_failures_that_go_on_do():
    """A few hundred ms of timeouts fill a window at 64 req/s; only a failure rate that stays
    over the bar for min_failing_s opens the circuit (a model that is down fails for longer).
    Calls are 1/64 s apart: exact in binary, so the 1 s boundary is not a rounding accident."""
    clock = Clock()
    step = 1 / 64
    b = CircuitBreaker(50, 20, 0.5, cooldown_s=5, clock=clock, min_failing_s=1.0)
    for i in range(30):  # 30 timeouts in 0.45 s
        clock.now = i * step
        b.record_failure()
    assert b.state == "closed"
    for i in range(30, 100):  # the stall is over: 70 answers
        clock.now = i * step
        b.record_success()
    down = 100 * step
    opened_at = None
    for i in range(200):  # down from here: the rate is over the bar from the 25th failure
        clock.now = down + i * step
        b.record_failure()
        if opened_at is None and b.state == "open":
            opened_at = clock.now
        if clock.now == down + 24 * step + 1.0 - step:
            assert b.state == "closed"  # one call short of min_failing_s
    assert opened_at == down + 24 * step + 1.0


def test_a_model_failing_most_calls_opens_it_though_some_succeed():
    clock = Clock()
    b = CircuitBreaker(50, 20, 0.5, cooldown_s=5, clock=clock, min_failing_s=1.0)
    for i in range(300):  # 80 % of calls fail, at 100 req/s
        clock.now = i * 0.01
        if i % 5 == 0:
            b.record_success()
        else:
            b.record_failure()
    assert b.state == "open"
    assert b.opened_at is not None and 1.0 <= b.opened_at <= 1.5


def test_the_window_forgets_old_failures():
    b = breaker(Clock(), window=10, min_calls=4)
    for _ in range(3):
        b.record_failure()
    for _ in range(10):
        b.record_success()
    assert sum(b.outcomes) == 0
    for _ in range(4):
        b.record_failure()
    assert b.state == "closed"  # 4 of the last 10 failed: 40 %
    b.record_failure()
    assert b.state == "open"  # 5 of 10


def test_first_answer_walks_the_hops_and_reports_failures():
    hops = [Hop("m-v2", "m/2", 0.05), Hop("m-v1", "m/1", 0.05)]

    async def call(hop: Hop) -> str:
        if hop.model == "m-v2":
            raise UpstreamError(hop.model, "timeout", "slow")
        return hop.version

    result = asyncio.run(first_answer(hops, call, Breakers(50, 20, 0.5, 5)))
    assert result.answer == "m/1" and result.hop == hops[1]
    assert [(f.model, f.kind) for f in result.failures] == [("m-v2", "timeout")]

    async def malformed(hop: Hop) -> str:
        raise KeyError("score")

    none = asyncio.run(first_answer(hops, malformed, Breakers(50, 20, 0.5, 5)))
    assert none.answer is None and [f.kind for f in none.failures] == ["bad_response"] * 2


# --- decoding model answers ------------------------------------------------------------------


def test_fraud_outputs_decode_and_bad_ones_raise():
    outputs: dict[str, list[Any]] = {
        "score": [0.73],
        "decision": ["block"],
        "reasons": ["is_new_device,is_foreign_country"],
        "model_version": ["fraud/3"],
        "card_unknown": [1],
    }
    answer = fraud_answer_from_outputs(outputs, "fraud/3")
    assert answer.reasons == ("is_new_device", "is_foreign_country") and answer.card_unknown
    with pytest.raises(ValueError):
        fraud_answer_from_outputs({**outputs, "score": [float("nan")]}, "fraud/3")
    with pytest.raises(KeyError):
        fraud_answer_from_outputs({"decision": ["allow"]}, "fraud/3")


def test_recs_outputs_decode_and_mismatches_raise():
    answer = recs_answer_from_outputs(
        {"item_ids": ["a,b"], "scores": ["0.9,0.5"], "path": ["model"]}, "recsys/1"
    )
    assert answer.items == (("a", 0.9), ("b", 0.5)) and answer.model_version == "recsys/1"
    with pytest.raises(ValueError):
        recs_answer_from_outputs({"item_ids": ["a,b"], "scores": ["0.9"]}, "recsys/1")


def test_each_row_of_a_batch_decodes_on_its_own():
    # A shadow batch: one V2 response, a row per copy; a bad row fails alone.
    outputs: dict[str, list[Any]] = {
        "score": [0.1, float("nan"), 0.9],
        "decision": ["allow", "allow", "block"],
        "reasons": ["", "", "large_amount"],
        "card_unknown": [0, 0, 1],
    }
    first, last = (fraud_answer_from_outputs(outputs, "fraud/2", row) for row in (0, 2))
    assert (first.score, first.decision, first.reasons, first.card_unknown) == (
        0.1,
        "allow",
        (),
        False,
    )
    assert (last.score, last.reasons, last.card_unknown) == (0.9, ("large_amount",), True)
    assert last.model_version == "fraud/2"  # not in the outputs: the version asked for
    with pytest.raises(ValueError):
        fraud_answer_from_outputs(outputs, "fraud/2", 1)
    recs = {"item_ids": ["a,b", "c"], "scores": ["0.9,0.5", "0.7"], "path": ["model", "popularity"]}
    second = recs_answer_from_outputs(recs, "recsys/2", 1)
    assert (second.items, second.path) == ((("c", 0.7),), "popularity")


def test_v2_request_encoding_follows_the_contract():
    body = v2_request({"card_id": ["c1"], "amount": [1.5], "k": [3], "flag": [True]}, "rid")
    assert body["id"] == "rid"
    assert [(i["name"], i["datatype"], i["shape"]) for i in body["inputs"]] == [
        ("card_id", "BYTES", [1]),
        ("amount", "FP64", [1]),
        ("k", "INT64", [1]),
        ("flag", "BOOL", [1]),
    ]
    assert v2_datatype([None, 2]) == "INT64"
    assert v2_outputs({"outputs": [{"name": "x", "data": [1]}]}, "m") == {"x": [1]}
    with pytest.raises(UpstreamError, match="bad_response"):
        v2_outputs({"error": "nope"}, "m")


# --- fallbacks -------------------------------------------------------------------------------


def test_rule_answer_uses_the_shared_rules_on_served_features():
    features = {
        "is_new_device": 1,
        "is_foreign_country": 1,
        "amount_over_card_mean": 1.0,
        "card_tx_count_1h": 0,
        "merchant_chargeback_rate_30d": 0.0,
        "card_known_devices": ["d1"],  # not a number: ignored by the rules
        "card_unknown": False,
    }
    answer = rule_answer(features, block_threshold=0.5)
    assert answer.score == pytest.approx(0.6) and answer.decision == "block"
    assert answer.reasons == ("is_new_device", "is_foreign_country")
    assert answer.model_version == "rules" and "card_known_devices" not in (answer.features or {})


def test_the_request_only_answer_flags_large_amounts_only():
    assert request_only_answer(999.0, 1_000.0, 0.5).decision == "allow"
    big = request_only_answer(1_000.01, 1_000.0, 0.5)
    assert (big.decision, big.reasons, big.model_version) == (
        "block",
        ("large_amount",),
        "rules:request",
    )


def test_popularity_prefers_the_hinted_genre_then_fills_without_repeats(tmp_path: Path):
    popular = PopularityList(tmp_path / "popularity.json")
    assert popular.recommend(3).items == ()
    popular.update([("a", 3.0), ("b", 2.0), ("c", 1.0)], {"jazz": [("j", 9.0), ("b", 2.0)]}, "test")
    assert [i for i, _ in popular.recommend(3, "jazz").items] == ["j", "b", "a"]
    assert [i for i, _ in popular.recommend(2).items] == ["a", "b"]
    popular.save()
    again = PopularityList(tmp_path / "popularity.json")
    assert again.overall == popular.overall and again.source == "test (saved)"


def test_popularity_seeds_from_the_item_stats_table(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    from features.table_files import table_path

    path = table_path(settings, "item_stats")
    path.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "item_id": ["a", "b", "a", "c"],
            "event_timestamp": pd.to_datetime(
                ["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-02"], utc=True
            ),
            "item_plays_7d": [1, 5, 9, 2],
            "item_genre": ["jazz", "rock", "jazz", "rock"],
        }
    ).to_parquet(path)
    popular = PopularityList(tmp_path / "p.json")
    assert popular.seed_from_feature_table(settings)
    assert [i for i, _ in popular.overall] == ["a", "b", "c"]  # a's latest count is 9
    assert [i for i, _ in popular.by_genre["rock"]] == ["b", "c"]
    assert not PopularityList(tmp_path / "q.json").seed_from_feature_table(
        Settings(data_dir=tmp_path / "empty")
    )


def test_a_feature_lookup_past_its_budget_keeps_its_thread_counted(tmp_path):
    """A timed-out lookup still occupies a thread until Feast returns: while both threads are
    held, further lookups are refused at once instead of queueing behind them."""
    import threading

    from mlsd.settings import Settings
    from serving.fallback import OnlineFeatureLookup

    release, started = threading.Event(), []
    features = OnlineFeatureLookup(Settings(data_dir=tmp_path))

    def stuck(request: dict) -> dict:
        started.append(request["card_id"])
        release.wait(10)
        return {"card_id": request["card_id"]}

    features._lookup = stuck  # type: ignore[method-assign]
    features._ready.set()

    async def scenario() -> tuple[list, list, int]:
        request = {"card_id": "c"}
        first = [
            await features.fraud_features({**request, "card_id": f"c{i}"}, 0.01) for i in range(2)
        ]
        refused = await features.fraud_features({**request, "card_id": "c2"}, 0.01)
        held = features._in_flight
        release.set()
        for _ in range(200):
            if features._in_flight == 0:
                break
            await asyncio.sleep(0.01)
        return [*first, refused], list(started), held

    answers, calls, held = asyncio.run(scenario())
    features.close()
    assert answers == [None, None, None]  # two timed out, the third was refused
    assert calls == ["c0", "c1"] and held == 2  # the third never reached a thread
    assert features._in_flight == 0


def test_a_rollback_naming_its_challenger_only_ever_withdraws_it():
    canary = rs.start_canary(fraud(champion=3, previous=2), 4, 5)
    state = rs.rollback(canary, "controller failed", challenger=4)
    assert (state.champion, state.challenger, state.split, state.previous) == (3, None, None, 2)
    # Gone already, or another challenger in traffic: refused, where a plain rollback would
    # have restored v2 or withdrawn somebody else's canary.
    for other in (state, rs.start_canary(fraud(champion=3, previous=2), 5, 5)):
        with pytest.raises(rs.RoutingConflict, match="v4 is not taking fraud traffic"):
            rs.rollback(other, challenger=4)


def test_a_canary_never_replaces_an_experiment_but_an_experiment_replaces_a_canary():
    experiment = rs.start_experiment(fraud(champion=3), "by-hand", "error_rate", 50, 4)
    with pytest.raises(rs.RoutingConflict, match="runs experiment by-hand on v4"):
        rs.start_canary(experiment, 4, 5)
    # A controller withdrawing "its" challenger must not end the experiment on it.
    with pytest.raises(rs.RoutingConflict, match="experiment by-hand, not a canary"):
        rs.rollback(experiment, challenger=4)
    # The person's rollback (no challenger named) and the experiment's own stop still work.
    assert rs.rollback(experiment).split is None
    assert rs.stop_split(experiment).split is None
    canary = rs.start_canary(fraud(champion=3), 4, 5)
    replaced = rs.start_experiment(canary, "by-hand", "error_rate", 50, 4)
    assert replaced.split is not None and replaced.split.kind == "experiment"
