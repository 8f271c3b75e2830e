"""Tests that need a system service (redis-server, PostgreSQL) and find it missing.

On a developer's machine such a test skips, saying what to install. In CI (``CI`` set to a
true value, as every CI service does) it fails instead: CI installs both through
``scripts/system-packages.sh`` (run by ``make install``), so a missing one there is a broken
install step, and a skip would hide it behind a green run."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

INSTALL_STEP = "scripts/system-packages.sh (run by `make install`)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def service_missing(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it in CI, where the service must be installed."""
    if in_ci():
        pytest.fail(f"{reason}; CI must install it with {INSTALL_STEP}", pytrace=False)
    pytest.skip(f"{reason} (installed by {INSTALL_STEP} when run as root on Debian)")
