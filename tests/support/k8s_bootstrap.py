"""The Kubernetes bootstrap script (infra/k8s/bootstrap/bootstrap.py) as a module: it ships as a
file in a ConfigMap, not in a package, so the tests that exercise it load it by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BOOTSTRAP = Path(__file__).resolve().parents[2] / "infra/k8s/bootstrap/bootstrap.py"


def bootstrap_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_bootstrap", BOOTSTRAP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
