"""Every use of KServe's private members, in one place, checked against the KServe they were
written for (0.21.0): importing this module fails at once, naming the version found, the one
expected and each member that is missing or changed, instead of a model server that dies on its
first request or, worse, serves with half its start-up skipped.

Why private members at all: `LabModelServer.start` re-does `kserve.ModelServer.start` for one
address of our choosing (KServe 0.21 hard-codes ``host="0.0.0.0"``) on a uvloop runner, so it
calls what `start` calls: registering the models, serving, the loop's exception handler, and
the server attributes `stop` reads on SIGTERM.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Coroutine
from typing import Any

import kserve

WRITTEN_FOR = "0.21.0"
# Private methods called here, with the parameters they are called with.
METHODS: dict[str, tuple[str, ...]] = {
    "_register_and_check_atleast_one_model_is_ready": ("self", "models"),
    "_serve": ("self",),
}
COROUTINES = {"_serve"}
# Private attributes a ModelServer instance has after __init__ (read or set here).
ATTRIBUTES = ("_custom_exception_handler", "_rest_server", "_grpc_server")


class KServeMismatch(RuntimeError):
    """The installed KServe lacks (or changed) a private member this lab relies on."""


def installed_version() -> str:
    try:
        return importlib.metadata.version("kserve")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def class_problems(server_cls: type) -> list[str]:
    """What differs, on the class, from the private methods this module calls."""
    problems = []
    for name, params in METHODS.items():
        method = getattr(server_cls, name, None)
        if not callable(method):
            problems.append(f"{server_cls.__name__}.{name} is missing")
            continue
        found = tuple(inspect.signature(method).parameters)
        if found != params:
            problems.append(
                f"{server_cls.__name__}.{name} takes ({', '.join(found)}), "
                f"not ({', '.join(params)})"
            )
        if name in COROUTINES and not inspect.iscoroutinefunction(method):
            problems.append(f"{server_cls.__name__}.{name} is no longer a coroutine function")
    return problems


def instance_problems(server: Any) -> list[str]:
    """What differs, on a constructed server, from the private attributes used here."""
    return [
        f"{type(server).__name__} instance has no {name}"
        for name in ATTRIBUTES
        if not hasattr(server, name)
    ]


def require(problems: list[str], found: str | None = None) -> None:
    """Raise KServeMismatch, naming both versions and every problem, when there are any."""
    if problems:
        raise KServeMismatch(
            f"serving.model_server was written for KServe {WRITTEN_FOR} and uses its private "
            f"members; KServe {found or installed_version()} is installed and differs: "
            + "; ".join(problems)
            + f". Install kserve=={WRITTEN_FOR} (uv.lock pins it) or update "
            "serving/model_server/kserve_private.py for this version."
        )


# --- the calls ------------------------------------------------------------------------------


def register_models(server: kserve.ModelServer, models: list[Any]) -> None:
    """Register the models and check one is ready (what ModelServer.start does first)."""
    server._register_and_check_atleast_one_model_is_ready(models)


def serve(server: kserve.ModelServer) -> Coroutine[Any, Any, None]:
    """The coroutine that runs every server `start` appended to `server.servers`."""
    coroutine: Coroutine[Any, Any, None] = server._serve()
    return coroutine


def exception_handler(server: kserve.ModelServer) -> Any:
    """The loop's exception handler KServe would install (a custom one, else its default)."""
    return server._custom_exception_handler or server.default_exception_handler


def keep_servers(server: kserve.ModelServer, rest: Any, grpc: Any | None) -> None:
    """Where KServe keeps its REST and gRPC servers (its `stop` reads them on a signal)."""
    server._rest_server = rest
    if grpc is not None:
        server._grpc_server = grpc


require(class_problems(kserve.ModelServer))
