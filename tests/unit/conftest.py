"""Unit tests are hermetic: no MLSD_* setting leaks in from the shell or from an integration
session fixture (which points the whole process at its lab while it lives)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_lab_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MLSD_") or key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
            monkeypatch.delenv(key, raising=False)
