"""A landing run goes round again while batches landed during its last round (their events were
dropped as collisions with it), and no longer than its bound."""

from __future__ import annotations

from pipeline.landing import land_until_empty


def rounds_finding(*found: int):
    """A land_once that finds found[i] batches in its i-th call (then none), and its calls."""
    calls: list[int] = []

    def land_once():
        n = found[len(calls)] if len(calls) < len(found) else 0
        calls.append(n)
        return {"accepted": [f"b{i}" for i in range(n)], "quarantined": []}

    return land_once, calls


def test_it_lands_again_until_a_round_finds_nothing():
    land_once, calls = rounds_finding(5, 2, 1)
    rounds = land_until_empty(land_once, max_rounds=10)
    assert [len(r["accepted"]) for r in rounds] == [5, 2, 1]
    assert calls == [5, 2, 1, 0]  # one look more, which found the zone empty


def test_a_quarantined_batch_counts_as_found():
    calls: list[int] = []

    def land_once():
        calls.append(1)
        return {"accepted": [], "quarantined": ["bad"] if len(calls) == 1 else []}

    assert len(land_until_empty(land_once, max_rounds=10)) == 1 and len(calls) == 2


def test_an_empty_zone_takes_one_round_and_the_bound_holds():
    land_once, calls = rounds_finding()
    assert len(land_until_empty(land_once, max_rounds=4)) == 1 and calls == [0]
    land_once, calls = rounds_finding(3, 3, 3, 3, 3, 3)
    assert len(land_until_empty(land_once, max_rounds=4)) == 4 and len(calls) == 4
