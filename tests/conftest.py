"""Shared test set-up: no telemetry from any library, and state only under tmp paths."""

from __future__ import annotations

import os

from mlsd.telemetry import QUIET_LIBRARIES

# Set before any test imports mlflow, prefect, GX or evidently.
for _key, _value in QUIET_LIBRARIES.items():
    os.environ.setdefault(_key, _value)
