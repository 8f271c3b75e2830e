"""The statistics the router's guardrails and readouts use: percentiles, the one-sided
two-proportion test, the two-sample KS test and the PSI. Pure functions of samples."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Samples = Sequence[float] | np.ndarray


def percentile(values: Samples, q: float) -> float | None:
    """The q-th percentile (linear interpolation), None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def rate_exceeds_by_margin(
    bad_challenger: int, n_challenger: int, bad_champion: int, n_champion: int, margin: float
) -> tuple[float, float]:
    """One-sided test that the challenger's rate of a bad outcome exceeds the champion's by more
    than `margin`: H0 p_c - p_b <= margin, H1 p_c - p_b > margin. Returns (z, p-value).

    Agresti-Caffo adjusted Wald test (one success and one failure added to each arm): unlike the
    plain Wald test its variance is never zero, so 3 failures in 3 calls against a clean
    champion is evidence, and 0 of 0 is not.
    """
    if n_challenger <= 0 or n_champion <= 0:
        raise ValueError("both arms need at least one observation")
    pc = (bad_challenger + 1) / (n_challenger + 2)
    pb = (bad_champion + 1) / (n_champion + 2)
    se = math.sqrt(pc * (1 - pc) / (n_challenger + 2) + pb * (1 - pb) / (n_champion + 2))
    z = (pc - pb - margin) / se
    return z, normal_sf(z)


def ks_two_sample(a: Samples, b: Samples) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (D, two-sided p-value), by `scipy.stats.ks_2samp`.

    D is the largest gap between the empirical CDFs. SciPy's `auto` method gives the exact
    p-value up to 10,000 scores an arm and the asymptotic one beyond (measured: 12 ms for two
    arms of 10,000, 38 ms for 50,000 on the lab's machine), where the hand-written version
    this replaced had only Kolmogorov's limit law with Stephens' correction (off by up to 0.04).
    """
    from scipy.stats import ks_2samp

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    result = ks_2samp(x, y, alternative="two-sided", method="auto")
    return float(result.statistic), float(result.pvalue)


def psi(expected: Samples, actual: Samples, bins: int = 10) -> float:
    """Population stability index of `actual` against `expected`, over quantile bins of
    `expected` (ties merge bins; empty bins get a floor of 1e-4 so the log is finite)."""
    e, a = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if e.size == 0 or a.size == 0:
        raise ValueError("both samples need at least one value")
    edges = np.unique(np.quantile(e, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = edges.size + 1
    pe = np.bincount(np.searchsorted(edges, e, side="right"), minlength=n_bins) / e.size
    pa = np.bincount(np.searchsorted(edges, a, side="right"), minlength=n_bins) / a.size
    pe, pa = np.maximum(pe, 1e-4), np.maximum(pa, 1e-4)
    return float(np.sum((pa - pe) * np.log(pa / pe)))
