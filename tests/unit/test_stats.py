"""The guardrails' statistics, against SciPy and hand calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.stats import ks_two_sample, normal_sf, percentile, psi, rate_exceeds_by_margin

# --- statistics ------------------------------------------------------------------------------


def test_normal_sf():
    assert normal_sf(0) == pytest.approx(0.5)
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)
    assert normal_sf(-1.959964) == pytest.approx(0.975, abs=1e-6)


def test_ks_distance_is_the_largest_gap_between_the_empirical_cdfs():
    # CDFs of [1, 2, 3, 4] and [3, 4, 5, 6] part most after 2: 2/4 of one, 0/4 of the other.
    d, p = ks_two_sample([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])
    assert d == pytest.approx(0.5)
    assert 0.0 < p <= 1.0
    assert ks_two_sample([0.2, 0.4, 0.4], [0.2, 0.4, 0.4]) == (0.0, 1.0)  # ties, identical


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(50, 400),  # the verdict judges distributions from min_scores = 50 on
    m=st.integers(50, 400),
    seed=st.integers(0, 2**31),
)
def test_ks_separates_a_shift_from_a_resample(n, m, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    # A shift of two standard deviations: D near 0.68, far past the 0.01 % tail at 50 each.
    _, p_shift = ks_two_sample(a, rng.normal(2.0, size=m))
    assert p_shift < 1e-4
    d, _ = ks_two_sample(a, rng.normal(size=m))
    # A resample's D shrinks like 1/sqrt(n m / (n + m)); 2.5 of that is the 0.01 % tail.
    assert d < 2.5 / math.sqrt(n * m / (n + m))


def test_ks_needs_a_value_in_each_sample():
    with pytest.raises(ValueError, match="at least one value"):
        ks_two_sample([], [0.5])


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    a = rng.beta(1, 20, 5_000)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, rng.beta(1, 20, 5_000)) < 0.02
    assert psi(a, rng.beta(5, 5, 5_000)) > 1.0


def test_psi_by_hand():
    # Champion deciles of 0..9 are the values themselves; the challenger puts half its mass
    # in the top bin: PSI = 9 (0.05 - 0.1) ln(0.5) + (0.55 - 0.1) ln(5.5).
    champion = list(range(10))
    challenger = [0, 1, 2, 3, 4, 5, 6, 7, 8] * 1 + [9] * 11  # 9 of 20 spread, 11 at the top
    expected = 9 * (0.05 - 0.1) * math.log(0.05 / 0.1) + (0.55 - 0.1) * math.log(0.55 / 0.1)
    assert psi(champion, challenger) == pytest.approx(expected)


@given(
    a=st.lists(st.floats(0, 1), min_size=1, max_size=50),
    b=st.lists(st.floats(0, 1), min_size=1, max_size=50),
)
def test_psi_is_finite_and_never_negative(a, b):
    value = psi(a, b)
    assert math.isfinite(value) and value >= -1e-12


def test_psi_survives_a_constant_champion():
    assert math.isfinite(psi([0.1] * 100, [0.1] * 50 + [0.9] * 50))


def test_rate_exceeds_by_margin_by_hand():
    z, p = rate_exceeds_by_margin(10, 100, 1, 100, 0.0)
    pc, pb = 11 / 102, 2 / 102
    se = math.sqrt(pc * (1 - pc) / 102 + pb * (1 - pb) / 102)
    assert z == pytest.approx((pc - pb) / se)
    assert p == pytest.approx(normal_sf(z))
    with pytest.raises(ValueError):
        rate_exceeds_by_margin(0, 0, 0, 10, 0.0)


@given(
    n_c=st.integers(1, 500),
    n_b=st.integers(1, 500),
    data=st.data(),
    margin=st.floats(0, 0.2),
)
def test_rate_test_is_monotone_in_the_challengers_failures(n_c, n_b, data, margin):
    bad_b = data.draw(st.integers(0, n_b))
    low = data.draw(st.integers(0, n_c))
    high = data.draw(st.integers(low, n_c))
    p_low = rate_exceeds_by_margin(low, n_c, bad_b, n_b, margin)[1]
    p_high = rate_exceeds_by_margin(high, n_c, bad_b, n_b, margin)[1]
    # Monotone wherever the evidence points at the challenger (z > 0, so every rejection);
    # below that a Wald statistic need not be (its variance shrinks near a rate of 1).
    if p_low < 0.5:
        assert p_high <= p_low + 1e-12


def test_percentile():
    assert percentile([], 99) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
