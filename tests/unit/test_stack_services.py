"""The lab's components as built from settings, the stack settings, and the stack commands' edges."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from prefect.settings.models.server.services import ServerServicesSchedulerSettings
from typer.testing import CliRunner

from mlsd.commands import stack as stack_cmd
from mlsd.commands import status as status_cmd
from mlsd.settings import MlflowSettings, PrefectSettings, Settings
from mlsd.stack.processes import PROCESS_LOCAL_ENV, component_env
from mlsd.stack.services import mlflow_component, prefect_component, stack_components
from mlsd.telemetry import QUIET_LIBRARIES
from tests.support.child import python_json


def settings(tmp_path: Path, **fields) -> Settings:
    return Settings(data_dir=tmp_path / "lab", **fields)


def flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_mlflow_runs_small_on_sqlite_under_the_data_dir(tmp_path):
    s = settings(tmp_path, mlflow=MlflowSettings(port=5123))
    c = mlflow_component(s)
    lab = (tmp_path / "lab").resolve()
    assert c.argv[1:3] == ("-m", "mlsd.stack.mlflow_server")  # `mlflow server`, one process
    assert flag(c.argv, "--backend-store-uri") == f"sqlite:///{lab}/mlflow/mlflow.db"
    assert flag(c.argv, "--artifacts-destination") == f"{lab}/mlflow/artifacts"
    assert "--serve-artifacts" in c.argv
    assert (flag(c.argv, "--host"), flag(c.argv, "--port")) == ("127.0.0.1", "5123")
    assert flag(c.argv, "--workers") == "1"
    assert c.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert c.health_url == "http://127.0.0.1:5123/health"
    assert c.log_file == lab / "logs" / "mlflow.log"
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5123"


def test_mlflow_serves_in_place_of_its_cli_only_where_nothing_runs_after_the_server(
    monkeypatch,
):
    """The launcher swaps MLflow's child start for an exec only when MLflow has the call it
    replaces and starts nothing after the server (its job runner)."""
    import mlflow.server

    from mlsd.stack.mlflow_server import in_place_possible

    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    assert in_place_possible() is None
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    assert "job execution" in (in_place_possible() or "")
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    monkeypatch.delattr(mlflow.server, "_exec_cmd")
    assert "_exec_cmd" in (in_place_possible() or "")


def test_the_mlflow_launcher_refuses_a_start_it_does_not_know_instead_of_exec_ing_it(
    monkeypatch,
):
    from mlsd.stack import mlflow_server

    def replaced(*_: object) -> None:  # an exec would replace the test run itself, and pass
        raise AssertionError("the launcher exec'd a start it does not know")

    monkeypatch.setattr(mlflow_server.os, "execvpe", replaced)
    _exec_in_place = mlflow_server._exec_in_place
    python = (sys.executable, "-c", "pass")
    with pytest.raises(AssertionError, match="exec'd"):  # the start it knows does exec
        _exec_in_place(python, extra_env={}, synchronous=False)
    for unknown in ({"synchronous": True}, {"capture_output": True}, {"env": {"A": "1"}}):
        with pytest.raises(RuntimeError, match="run `mlflow server` itself"):
            _exec_in_place(python, extra_env={}, **{"synchronous": False, **unknown})


def test_mlflow_takes_a_postgres_uri_for_the_scale_profile(tmp_path):
    uri = "postgresql://mlflow:pw@127.0.0.1/mlflow"
    c = mlflow_component(settings(tmp_path, mlflow=MlflowSettings(backend_store_uri=uri)))
    assert flag(c.argv, "--backend-store-uri") == uri


def test_prefect_has_its_own_home_sqlite_and_ui(tmp_path):
    s = settings(tmp_path, prefect=PrefectSettings(port=4321))
    c = prefect_component(s)
    lab = (tmp_path / "lab").resolve()
    assert c.argv[-6:] == ("--host", "127.0.0.1", "--port", "4321", "--ui", "--analytics-off")
    assert c.env["PREFECT_HOME"] == f"{lab}/prefect"
    assert c.env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == (
        f"sqlite+aiosqlite:///{lab}/prefect/prefect.db"
    )
    assert c.env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert c.env["PREFECT_SERVER_UI_ENABLED"] == "true"
    # Runs on an interval are created minutes ahead, not Prefect's hour: what was created
    # ahead is all due at once when a stopped lab starts again.
    ahead = c.env["PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME"]
    scheduler = ServerServicesSchedulerSettings.model_validate({"min_scheduled_time": ahead})
    assert scheduler.min_scheduled_time == dt.timedelta(seconds=300)
    assert c.health_url == "http://127.0.0.1:4321/api/health"
    assert c.url == "http://127.0.0.1:4321"
    assert s.prefect_api_url == "http://127.0.0.1:4321/api"


def test_every_component_binds_the_configured_host_and_runs_without_telemetry(tmp_path):
    s = settings(tmp_path, bind_host="127.0.0.2")
    for component in stack_components(s):
        assert component.host == "127.0.0.2"
        if component.port is not None:  # a component that listens binds the configured host
            assert flag(component.argv, "--host") == "127.0.0.2"
        env = component_env(component, base={"DO_NOT_TRACK": "false"})
        assert {k: env[k] for k in QUIET_LIBRARIES} == QUIET_LIBRARIES


def test_a_person_may_turn_mlflows_chatter_back_on_but_never_telemetry(tmp_path):
    component = stack_components(settings(tmp_path))[0]
    env = component_env(
        component, base={"MLFLOW_LOGGING_LEVEL": "DEBUG", "MLFLOW_DISABLE_TELEMETRY": "false"}
    )
    assert env["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def test_the_components_that_call_prefect_ride_out_a_busy_database(tmp_path):
    """Prefect's client retries 503 (its SQLite database locked) 2, 4, 8 ... s apart: six tries
    wait about 126 s, past SQLite's 60 s busy timeout; Prefect's default five wait 62 s."""
    assert Settings(data_dir=tmp_path).prefect.client_max_retries == 6
    s = settings(tmp_path, prefect={"client_max_retries": 7})
    callers = {c.name: c for c in stack_components(s) if "PREFECT_API_URL" in c.env}
    assert {"prefect", "flows", "world"} <= set(callers)
    for component in callers.values():
        assert component.env["PREFECT_CLIENT_MAX_RETRIES"] == "7", component.name
        assert component.env["PREFECT_API_URL"] == s.prefect_api_url


def test_components_run_arrow_on_jemalloc_unless_the_environment_names_an_allocator(tmp_path):
    component = stack_components(settings(tmp_path))[0]
    probe = [
        sys.executable,
        "-c",
        "import pyarrow; print(pyarrow.default_memory_pool().backend_name)",
    ]

    def backend(env: dict[str, str]) -> str:
        done = subprocess.run(
            probe, capture_output=True, text=True, timeout=60, check=True, env=env
        )
        return done.stdout.strip()

    unnamed = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    assert backend(component_env(component, base=unnamed)) == "jemalloc"
    named = {**unnamed, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    assert backend(component_env(component, base=named)) == "system"


GLIBC_MMAP_PROBE = """
import ctypes

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
big = bytearray(8 << 20)  # mapped, whatever the threshold; freeing it raises glibc's default
del big
before = libc.mallinfo2().hblks
smaller = bytearray(2 << 20)
print(libc.mallinfo2().hblks - before)  # 1: mapped of its own, 0: from the heap
"""


def test_components_keep_glibcs_mmap_threshold_fixed_so_freed_arrays_go_back(tmp_path):
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc >= 2.33: the C library ignores MALLOC_MMAP_THRESHOLD_")
    component = stack_components(settings(tmp_path))[0]
    unset = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}

    def mapped_alone(env: dict[str, str]) -> str:
        probe = [sys.executable, "-c", GLIBC_MMAP_PROBE]
        done = subprocess.run(
            probe, capture_output=True, text=True, timeout=60, check=True, env=env
        )
        return done.stdout.strip()

    assert mapped_alone(unset) == "0"  # glibc's default: the threshold rose past 2 MiB
    assert mapped_alone(component_env(component, base=unset)) == "1"


def test_a_wildcard_bind_is_reached_on_loopback(tmp_path):
    assert settings(tmp_path, bind_host="0.0.0.0").mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_stack_state_lives_under_the_data_dir(tmp_path):
    s = settings(tmp_path)
    for path in (s.logs_dir, s.run_dir, s.mlflow_dir, s.mlflow_artifacts_dir, s.prefect_home):
        assert path.is_relative_to(s.data_dir)


def cli() -> typer.Typer:
    app = typer.Typer()
    stack_cmd.register(app)
    status_cmd.register(app)
    return app


def test_status_and_down_when_nothing_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path / "lab"))
    runner = CliRunner()
    result = runner.invoke(cli(), ["status"])
    assert result.exit_code == 0
    assert "not running" in result.output
    data = json.loads(runner.invoke(cli(), ["status", "--json"]).output)
    assert data == {"watchdog_pid": None, "components": []}
    assert "nothing was running" in runner.invoke(cli(), ["down"]).output


def test_up_refuses_an_unknown_component_and_the_k8s_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path / "lab"))
    runner = CliRunner()
    result = runner.invoke(cli(), ["up", "--only", "nope"])
    assert result.exit_code == 2
    assert "known: mlflow, prefect" in result.output
    monkeypatch.setenv("MLSD_PROFILE", "k8s")
    result = runner.invoke(cli(), ["up"])
    assert result.exit_code == 2
    assert "kind-up" in result.output
    # ... and the target it names exists.
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert re.search(r"^kind-up:", makefile, re.MULTILINE)


def test_a_shadow_server_runs_beside_the_model_server_when_configured(tmp_path):
    from mlsd.settings import ModelServerSettings, ProductServerSettings, RouterSettings
    from mlsd.stack.services import serving_components, shadow_components
    from mlsd.stack.supervisor import start_levels

    # fraud has one by default, recsys not; it is started apart, after the router.
    s = settings(tmp_path)
    serving = serving_components(s, ["fraud", "recsys"])
    assert [c.name for c in serving] == ["model-fraud", "model-recsys", "router"]
    (shadow,) = shadow_components(s, ["fraud", "recsys"])
    assert shadow.name == "model-fraud-shadow"
    assert (flag(shadow.argv, "--product"), flag(shadow.argv, "--http-port")) == ("fraud", "8083")
    assert flag(shadow.argv, "--grpc-port") == "9083"
    assert shadow.health_url == "http://127.0.0.1:8083/v2/health/ready"
    assert shadow.depends_on == ("mlflow",)
    # Best effort: it yields the shared cores to the answering servers.
    assert flag(shadow.argv, "--nice") == "10" and "--sched-idle" in shadow.argv
    assert all("--nice" not in c.argv for c in serving)
    assert [[c.name for c in wave] for wave in start_levels(serving)] == [
        ["model-fraud", "model-recsys"],
        ["router"],
    ]
    assert s.shadow_server_url("fraud") == "http://127.0.0.1:8083"
    assert s.shadow_server_url("recsys") is None
    # Unset: shadows go to the serving server, and no shadow server runs.
    fraud = ProductServerSettings(http_port=8081, grpc_port=9081, timeout_ms=50)
    plain = settings(tmp_path, model_servers=ModelServerSettings(fraud=fraud))
    assert shadow_components(plain, ["fraud"]) == []
    assert plain.shadow_server_url("fraud") is None
    # A router pointed at another fraud server sends its shadows there, unless told otherwise;
    # the lab's shadow server is then not started for nothing.
    elsewhere = settings(tmp_path, router=RouterSettings(fraud_upstream="http://10.0.0.5:8081"))
    assert elsewhere.shadow_server_url("fraud") is None
    assert shadow_components(elsewhere, ["fraud"]) == []
    told = RouterSettings(fraud_upstream="http://10.0.0.5:8081", fraud_shadow_upstream="http://x:1")
    assert settings(tmp_path, router=told).shadow_server_url("fraud") == "http://x:1"
    # Both shadow ports or none.
    with pytest.raises(ValueError, match="together"):
        ProductServerSettings(http_port=8082, grpc_port=9082, timeout_ms=250, shadow_http_port=8084)


def test_a_component_does_not_inherit_the_metrics_directory_feast_made_for_its_parent(tmp_path):
    # `mlsd demo` imports Feast, then starts the stack; Feast's directory dies with the demo.
    script = f"""
import json, os
import feast.metrics  # makes /tmp/feast_metrics_*, exports it, deletes it at exit
from mlsd.settings import Settings
from mlsd.stack.processes import PROCESS_LOCAL_ENV, component_env
from mlsd.stack.services import stack_components
settings = Settings(data_dir={str(tmp_path)!r})
envs = [component_env(c) for c in stack_components(settings)]
print(json.dumps({{
    "parent": os.environ["PROMETHEUS_MULTIPROCESS_DIR"],
    "leaked": sorted({{e.get(k) for e in envs for k in PROCESS_LOCAL_ENV}} - {{None}}),
}}))
"""
    # A fresh process of its own, like `mlsd demo`: not one that inherits a directory Feast
    # made for this test process (another test may have imported Feast here first).
    seen = python_json(
        script, env={k: v for k, v in os.environ.items() if k not in PROCESS_LOCAL_ENV}
    )
    assert "feast_metrics_" in seen["parent"]
    assert not Path(seen["parent"]).exists()  # gone with the process that made it
    assert seen["leaked"] == []  # so no component was started pointing at it


def test_every_lab_deployment_carries_the_tag_the_orphan_cleanup_is_scoped_to():
    from mlsd.events import LAB_TAG
    from mlsd.flows import lab_deployments

    deployments = lab_deployments()
    assert deployments and all(LAB_TAG in (d.tags or []) for d in deployments)
