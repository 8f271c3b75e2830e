"""The registry's MLflow client sends MLflow's own request headers and never loads Feast's
request-header plugin, which imports all of Feast into every process that reads a model version
(see mlsd.registry._request_headers_without_feast)."""

from __future__ import annotations

from importlib.metadata import entry_points

from tests.support.child import python_json

HEADERS = """
import json, sys
from mlsd.registry import ModelRegistry
ModelRegistry("http://127.0.0.1:9")  # no call is made: MLflow resolves headers per request
from mlflow.tracking.request_header.registry import resolve_request_headers
from mlflow.tracking.request_header.registry import _request_header_provider_registry as providers
print(json.dumps({
    "feast_imported": "feast" in sys.modules,
    "headers": resolve_request_headers(),
    "providers": [type(p).__module__ for p in providers],
}))
"""


def test_feast_registers_a_plugin_that_the_registry_client_leaves_out() -> None:
    plugins = [e.value for e in entry_points(group="mlflow.request_header_provider")]
    assert any(value.startswith("feast.") for value in plugins), plugins  # else nothing to skip

    seen = python_json(HEADERS)

    assert seen["feast_imported"] is False
    assert not any(module.startswith("feast") for module in seen["providers"]), seen
    assert any(module.startswith("mlflow.") for module in seen["providers"]), seen
    assert seen["headers"]["User-Agent"].startswith("mlflow-python-client/"), seen["headers"]


def test_a_process_that_loaded_mlflows_header_registry_first_keeps_every_plugin() -> None:
    """Too late to leave one out: the registry client works with what MLflow registered."""
    seen = python_json("import mlflow.tracking.request_header.registry\n" + HEADERS)

    assert seen["feast_imported"] is True
    assert any(module.startswith("feast") for module in seen["providers"]), seen
