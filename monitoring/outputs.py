"""What each judged window leaves under `.mlsd/monitoring/`: an HTML report a person can open,
a JSON summary (the verdict and each column's drift), and a snapshot in the local Evidently
workspace (a project per product) that Evidently's own UI shows over time."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitoring.history import windows_dir
from monitoring.judge import Judgement


@dataclass(frozen=True)
class WindowFiles:
    summary: Path
    html: Path | None
    snapshot_id: str | None


def workspace_dir(monitoring_dir: Path) -> Path:
    return monitoring_dir / "workspace"


def references_dir(monitoring_dir: Path) -> Path:
    """Where what each version's run logged is kept (monitoring.reference)."""
    return monitoring_dir / "references"


def summary_dict(j: Judgement, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"verdict": j.verdict.as_dict()}
    if j.drift is not None:
        out["drift"] = [
            {
                "column": c.column,
                "kind": c.kind,
                "method": c.method,
                "threshold": c.threshold,
                "value": c.value,
                "psi": c.psi,
                "drifted": c.drifted,
            }
            for c in [*j.drift.columns, *([j.drift.score] if j.drift.score else [])]
        ]
        out["rows_compared"] = {"window": j.drift.rows_current, "reference": j.drift.rows_reference}
    if decision is not None:
        out["trigger"] = decision
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(monitoring_dir: Path, j: Judgement, decision: dict[str, Any] | None) -> Path:
    """The window's JSON summary, with the trigger's decision once there is one."""
    folder = windows_dir(monitoring_dir, j.verdict.product)
    folder.mkdir(parents=True, exist_ok=True)
    summary = (folder / j.verdict.window_id).with_suffix(".json")
    _write_atomic(summary, json.dumps(summary_dict(j, decision), indent=2, default=str))
    return summary


def write_window(
    monitoring_dir: Path, j: Judgement, decision: dict[str, Any] | None
) -> WindowFiles:
    """Summary JSON always; HTML and workspace snapshot when Evidently ran. Call it once a
    window: the trigger's decision, which reads the summary, is added with `write_summary` (a
    window written twice left two snapshots in Evidently's UI and paid for both)."""
    summary = write_summary(monitoring_dir, j, decision)
    html = snapshot_id = None
    if j.drift is not None and j.drift.snapshot is not None:
        html = summary.with_suffix(".html")
        j.drift.snapshot.save_html(str(html))
        snapshot_id = add_snapshot(monitoring_dir, j.verdict.product, j.drift.snapshot)
    return WindowFiles(summary, html, snapshot_id)


def add_snapshot(monitoring_dir: Path, product: str, snapshot: Any) -> str:
    """Add the snapshot to the product's project in the local Evidently workspace.

    Written with the file storage Evidently's `Workspace` writes with (its `LocalState`), not
    through a `Workspace`: opening one reads and parses every snapshot already in it (its
    dataset manager loads the whole project state), so a window's cost grew with the lab's age.
    Measured on a demo's workspace of 32 fraud snapshots: 3.1 s of a window's 9.9 s, on an idle
    machine. `mlsd ui evidently` shows the runs written this way like any other."""
    from evidently.legacy.core import new_id
    from evidently.sdk.models import ProjectModel
    from evidently.ui.storage.local.base import LocalState

    state = LocalState(str(workspace_dir(monitoring_dir)))
    state.location.makedirs("")
    name = f"mlsd {product}"
    project_id = next((pid for pid in state.list_projects() if _name_of(state, pid) == name), None)
    if project_id is None:
        project = ProjectModel(
            name=name, description=f"Windows of the {product} model's prediction log"
        )
        project_id = state.write_project(project).id
    snapshot_id = new_id()
    state.write_snapshot(project_id, snapshot_id, snapshot.to_snapshot_model())
    return str(snapshot_id)


def _name_of(state: Any, project_id: str) -> str | None:
    """A project's name; None for a folder without a readable project file (one a killed
    process left half made must not stop every later window)."""
    try:
        return str(state.read_project(project_id).name)
    except (OSError, ValueError):
        return None
