"""What a person reads: human times and sizes, tables that fit 80 columns, one line per
expected failure with its documented exit code, and a help without stray types."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from mlsd import console as console_mod
from mlsd.cli import app
from mlsd.commands.status import render_products, traffic_summary
from mlsd.console import (
    EXIT_CODES_HELP,
    ExitCode,
    human_bytes,
    human_duration,
    human_time,
    table,
    timeline,
)

NOW = dt.datetime(2026, 12, 3, 20, 0, 0, tzinfo=dt.UTC)
runner = CliRunner()


def render(renderable: object, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_human_formats():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 2**30) == "3.0 GiB"
    assert human_duration(None) == "-"
    assert human_duration(42) == "42s"
    assert human_duration(3725) == "1h02m"
    assert human_duration(90000) == "1d01h"


def test_human_time_reads_epochs_and_iso_the_same_way():
    epoch = NOW.timestamp() - 185
    assert human_time(epoch, NOW) == "19:56:55 (3m05s ago)"
    assert human_time("2026-12-03T19:56:55+00:00", NOW) == "19:56:55 (3m05s ago)"
    assert human_time("2026-12-01T08:00:00", NOW) == "12-01 08:00 (2d12h ago)"
    assert human_time(None, NOW) == "-"


def test_timeline_is_oldest_first_with_human_times():
    text = render(
        timeline(
            "history",
            [(NOW.timestamp() - 60, "promoted", "v3"), (NOW.timestamp() - 600, "canary", "v3 5 %")],
            NOW,
        )
    )
    assert text.index("canary") < text.index("promoted")
    assert "19:50:00 (10m00s ago)" in text
    assert "1796" not in text  # no epoch floats


def test_a_long_url_folds_and_a_name_is_never_cut_at_80_columns():
    from rich.table import Column

    url = "http://127.0.0.1:25080/a/rather/long/path/that/does/not/fit/in/one/narrow/column/at/all"
    text = render(
        table(
            "t",
            [Column("component", no_wrap=True), "health", Column("url", overflow="fold")],
            [("fraud-shadow-server", "healthy", url)],
        )
    )
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "fraud-shadow-server" in text
    assert url in "".join(line.strip().split("  ")[-1] for line in text.splitlines())


def routing(**changes):
    base = {
        "product": "fraud",
        "champion": 2,
        "challenger": 3,
        "previous": 1,
        "split": {
            "kind": "canary",
            "name": "canary-fraud-v3",
            "metric": None,
            "challenger_percent": 25.0,
            "started_at": NOW.timestamp() - 30,
        },
        "shadow": False,
        "shadow_percent": 100.0,
        "loaded": [2, 3],
        "breakers": {"fraud-v2": "closed", "fraud-v3": "open"},
        "history": [
            {
                "at": NOW.timestamp() - 30,
                "action": "canary_started",
                "detail": "",
                "champion": 2,
                "challenger": 3,
            }
        ],
    }
    return {**base, **changes}


def test_routing_reads_as_words_and_a_timeline():
    assert traffic_summary(routing()) == "canary: 25 % to v3"
    assert traffic_summary(routing(split=None, shadow=True, shadow_percent=25.0)) == (
        "shadow: v3 sees 25 %"
    )
    assert traffic_summary(routing(split=None, challenger=None)) == "all to the champion"
    text = render(render_products({"fraud": routing()}))
    assert "canary: 25 % to v3" in text
    assert "fraud canary_started" in text
    assert "fraud-v3" in text and "open" in text  # a breaker that is not closed is shown
    assert "fraud-v2" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "started_at" not in text and "{" not in text  # no raw JSON


def test_fail_prints_one_line_and_exits_with_its_code(capsys):
    with pytest.raises(typer.Exit) as exit_:
        console_mod.fail(
            "no router at http://x: start the stack with `mlsd up`", ExitCode.NOT_READY
        )
    assert exit_.value.exit_code == 2


def test_help_lists_exit_codes_and_no_stray_bool():
    for args in (
        ["--help"],
        ["status", "--help"],
        ["rollout", "start", "--help"],
        ["train", "--help"],
    ):
        result = runner.invoke(app, args, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output
        assert "Exit codes" in result.output, args
    assert "@challenger" in runner.invoke(app, ["rollout", "start", "--help"]).output
    assert "3 the gate refused the model" in EXIT_CODES_HELP


def test_rollout_without_a_router_is_one_line_and_exit_2(monkeypatch, tmp_path):
    from mlsd.netutil import free_port

    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path / "lab"))
    monkeypatch.setenv("MLSD_ROUTER__PORT", str(free_port()))
    for args in (["rollout", "status", "fraud"], ["rollout", "promote", "fraud"]):
        result = runner.invoke(app, args, env={"COLUMNS": "80"})
        assert result.exit_code == ExitCode.NOT_READY, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no router at"), result.output
        assert "Traceback" not in result.output


def test_train_and_rollout_start_without_the_stack_are_one_line_and_exit_2(monkeypatch, tmp_path):
    from mlsd.netutil import free_port

    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path / "lab"))
    monkeypatch.setenv("MLSD_MLFLOW__PORT", str(free_port()))
    for args in (["train", "fraud"], ["rollout", "start", "fraud"]):
        result = runner.invoke(app, args, env={"COLUMNS": "80"})
        assert result.exit_code == ExitCode.NOT_READY, result.output
        assert result.output.strip().splitlines() == [
            line
            for line in result.output.strip().splitlines()
            if line.startswith("error: no MLflow at")
        ], result.output


def test_config_show_lists_each_setting_with_its_variable_and_meaning():
    result = runner.invoke(app, ["config", "show", "router.canary"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "router.canary.alpha = 0.01  MLSD_ROUTER__CANARY__ALPHA" in result.output
    assert "Significance level" in result.output
    assert "simulator" not in result.output
    data = json.loads(runner.invoke(app, ["config", "show", "router.canary", "--json"]).output)
    assert data["router.canary.alpha"] == 0.01
    unknown = runner.invoke(app, ["config", "show", "nope"])
    assert unknown.exit_code == 2 and "sections: " in unknown.output
