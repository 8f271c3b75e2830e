"""Great Expectations on a live window tells a unit error from inflation: the one is a quality
alert (never a retrain), the other is drift for the drift check to see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.quality import check_window

RNG = np.random.default_rng(5)
# Card amounts as the world draws them: log-normal, median about 40.
REFERENCE = pd.DataFrame({"amount": RNG.lognormal(3.7, 1.1, 5000)})


def window(amounts: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"amount": amounts, "score": RNG.random(len(amounts))})


def live(share_in_cents: float, inflation: float = 1.0) -> pd.DataFrame:
    amounts = RNG.lognormal(3.7, 1.1, 2400) * inflation
    broken = int(share_in_cents * len(amounts))
    amounts[:broken] *= 100
    return window(amounts)


@pytest.mark.parametrize("inflation", [1.0, 1.8, 3.0])
def test_inflated_amounts_are_not_a_quality_alert(inflation):
    result = check_window(live(0.0, inflation), ["amount"], REFERENCE)
    assert result.success, result.failed


@pytest.mark.parametrize("share", [1.0, 0.5, 0.1])
def test_amounts_in_cents_are_a_quality_alert_even_in_a_tenth_of_the_window(share):
    result = check_window(live(share), ["amount"], REFERENCE)
    assert not result.success
    assert any(f.startswith("amount: be_between up to") for f in result.failed), result.failed


def test_missing_inputs_null_scores_and_negative_amounts_are_named():
    broken = window(np.r_[-5.0, -1.0, -0.5, RNG.lognormal(3.7, 1.1, 97)])
    broken.loc[:9, "score"] = None
    result = check_window(broken, ["amount", "card_tx_count_1h"], REFERENCE)
    assert not result.success
    text = "; ".join(result.failed)
    assert "card_tx_count_1h: missing from the logged inputs" in text
    assert "score: not_be_null" in text
    assert "amount: be_between from 0" in text
