"""The bad-model drill's skew: a 0/1 input flipped in every window of the training set."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.fraud_training_set import flip_training_flag

FEATURES = ["is_new_device", "amount"]
FRAME = pd.DataFrame(
    {"is_new_device": [0, 1, 0, 0], "amount": [10.0, 2.5, 80.0, 3.0], "window": ["train"] * 4}
)


def test_the_flag_is_flipped_and_nothing_else_moves():
    flipped = flip_training_flag(FRAME, "is_new_device", FEATURES)
    assert flipped["is_new_device"].tolist() == [1, 0, 1, 1]
    pd.testing.assert_frame_equal(
        flipped.drop(columns="is_new_device"), FRAME.drop(columns="is_new_device")
    )
    assert FRAME["is_new_device"].tolist() == [0, 1, 0, 0]  # the caller's frame is untouched


@pytest.mark.parametrize(
    "flag, message",
    [("is_foreign", "is not a model input"), ("amount", "is not a 0/1 flag")],
)
def test_a_flag_that_is_not_a_0_1_input_is_refused_by_name(flag, message):
    with pytest.raises(ValueError, match=f"flip_flag: '{flag}' {message}"):
        flip_training_flag(FRAME, flag, FEATURES)
