"""Dependencies run one way: mlsd -> everything; serving/monitoring/pipeline -> models -> features
-> settings.

Checked from the source's import statements, so a wrong-way import fails here before it
becomes a cycle somewhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mlsd", "simulator", "pipeline", "features", "models", "serving", "monitoring")
# What each package may import from the project (besides itself). `mlsd.settings`,
# `mlsd.console`, `mlsd.telemetry`, `mlsd.registry`, `mlsd.netutil`, `mlsd.events`,
# `mlsd.http1` and `mlsd.cpu` are leaves every package may use.
ALLOWED: dict[str, set[str]] = {
    "features": set(),
    "models": {"features"},
    "pipeline": {"models", "features"},
    "serving": {"models", "features"},
    "monitoring": {"models", "features"},
    "simulator": set(),
}
# Single modules a package may import from a package it otherwise may not: monitoring reads the
# prediction log through the module that owns its schema and both backends (a second reader
# would drift from it); it imports nothing else of serving.
MODULES: dict[str, set[str]] = {"monitoring": {"serving.prediction_log"}}
LEAVES = {
    "mlsd.settings",
    "mlsd.console",
    "mlsd.telemetry",
    "mlsd.registry",
    "mlsd.netutil",
    "mlsd.events",
    "mlsd.http1",
    "mlsd.cpu",
}


def project_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def test_packages_import_only_downstream():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in (REPO / package).rglob("*.py"):
            for name in project_imports(path):
                top = name.split(".")[0]
                if top == package or name in LEAVES or top in allowed:
                    continue
                if name in MODULES.get(package, set()):
                    continue
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert wrong == []


def test_settings_is_a_leaf():
    assert project_imports(REPO / "mlsd" / "settings.py") == set()


# The router's rooms: the HTTP side (app, routes, their dependencies, the entry point) builds on
# the domain side (routing core, model servers, discovery, shadow copies, log mapping, control);
# never the other way, so the Router can be driven and tested without FastAPI's app.
ROUTER_HTTP_ROOMS = {"http_app", "dependencies", "public_routes", "admin_routes", "entry"}


def test_router_domain_rooms_do_not_import_the_http_side():
    rooms = REPO / "serving" / "router"
    wrong = []
    for path in rooms.glob("*.py"):
        if path.stem in ROUTER_HTTP_ROOMS or path.stem.startswith("__"):
            continue
        for name in project_imports(path):
            if name.startswith("serving.router.") and name.split(".")[2] in ROUTER_HTTP_ROOMS:
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert wrong == []
    assert {p.stem for p in rooms.glob("*.py")} >= ROUTER_HTTP_ROOMS | {"core", "__main__"}


def test_the_product_never_imports_test_support():
    """Test-only code (tests/support: the lab recipe, the sample world, the skew check, the V2
    double) stays out of the wheel's packages, so nothing installed can depend on it."""
    wrong = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module]
                    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    else []
                )
                wrong += [
                    f"{path.relative_to(REPO)} imports {n}"
                    for n in names
                    if n.split(".")[0] in {"tests", "benchmarks"}
                ]
    assert wrong == []
