"""A missing Redis or PostgreSQL skips on a developer's machine and fails in CI."""

from __future__ import annotations

import pytest

from tests.support.system_services import service_missing


@pytest.mark.parametrize("ci", ["true", "1", "True"])
def test_in_ci_a_missing_service_fails_the_run_naming_the_install_step(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"redis-server .*scripts/system-packages\.sh"):
        service_missing("redis-server is not installed")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_elsewhere_a_missing_service_skips_saying_what_installs_it(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"PostgreSQL .*scripts/system-packages\.sh"):
        service_missing("PostgreSQL is not installed")
