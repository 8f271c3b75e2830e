"""KServe's private members the model server uses: the installed KServe has them as written
for, and any other shape fails loudly, naming both versions and each member."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import kserve
import pytest

from serving.model_server import kserve_private
from serving.model_server.kserve_private import KServeMismatch


def test_the_installed_kserve_has_every_private_member_as_written_for():
    assert kserve_private.installed_version() == kserve_private.WRITTEN_FOR
    assert kserve_private.class_problems(kserve.ModelServer) == []
    # Every private method named is one the model server's start goes through.
    source = inspect.getsource(kserve_private)
    for name in kserve_private.METHODS:
        assert f"server.{name}(" in source


def test_a_constructed_server_has_the_private_attributes():
    server = kserve.ModelServer(http_port=0, grpc_port=0, enable_grpc=False)
    assert kserve_private.instance_problems(server) == []


class Missing:
    pass


class Changed:
    def _register_and_check_atleast_one_model_is_ready(self, models: Any, strict: bool) -> None:
        pass

    def _serve(self) -> None:  # no longer a coroutine function
        pass


def test_a_missing_or_changed_member_is_named():
    missing = kserve_private.class_problems(Missing)
    assert [p.split(" ")[0] for p in missing] == [
        "Missing._register_and_check_atleast_one_model_is_ready",
        "Missing._serve",
    ]
    changed = kserve_private.class_problems(Changed)
    assert changed == [
        "Changed._register_and_check_atleast_one_model_is_ready takes (self, models, strict), "
        "not (self, models)",
        "Changed._serve is no longer a coroutine function",
    ]
    assert kserve_private.instance_problems(object()) == [
        f"object instance has no {name}" for name in kserve_private.ATTRIBUTES
    ]


def test_the_failure_names_both_versions_and_every_problem():
    problems = kserve_private.class_problems(Changed)
    with pytest.raises(KServeMismatch) as raised:
        kserve_private.require(problems, found="0.22.0")
    message = str(raised.value)
    assert "KServe 0.21.0" in message and "KServe 0.22.0 is installed" in message
    assert all(p in message for p in problems)
    kserve_private.require([], found="0.22.0")  # nothing differs: nothing raised


def test_no_other_module_touches_kserve_private_members():
    serving = Path(kserve_private.__file__).resolve().parents[1]
    names = [*kserve_private.METHODS, *kserve_private.ATTRIBUTES]
    users = [
        f"{path.relative_to(serving.parent)}: {name}"
        for path in serving.rglob("*.py")
        if path.name != "kserve_private.py"
        for name in names
        if f".{name}" in path.read_text()
    ]
    assert users == []
