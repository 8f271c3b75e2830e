"""What monitoring left behind, read back: each window's JSON summary (its verdict and what the
trigger decided on it), as the trigger's history and as `mlsd status` shows it.

Light on purpose, json and the verdict record only: `mlsd status` reads it without importing
pandas, Evidently or Great Expectations (monitoring.outputs writes the same files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monitoring.verdict import WindowVerdict

HISTORY_LIMIT = 50  # summaries read back for the trigger's history (N is far smaller)


def product_dir(monitoring_dir: Path, product: str) -> Path:
    return monitoring_dir / product


def windows_dir(monitoring_dir: Path, product: str) -> Path:
    """Each window's summary (`<window id>.json`) and report (`<window id>.html`)."""
    return product_dir(monitoring_dir, product) / "windows"


def read_summary(path: Path) -> dict[str, Any] | None:
    """A window's summary; None for one being written or from an older layout (no verdict)."""
    try:
        summary = json.loads(path.read_text())
        WindowVerdict.from_dict(summary["verdict"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary if isinstance(summary, dict) else None


def read_summaries(
    monitoring_dir: Path, product: str, until: float | None = None
) -> list[dict[str, Any]]:
    """The summaries of the product's latest windows ending at or before `until` (default:
    all), oldest first (by window end), at most HISTORY_LIMIT.

    Chosen by name before any is read: a window's id ends with its end second, so a monitor run
    reads the newest HISTORY_LIMIT files and not every window the lab ever judged (measured:
    1,440 summaries, three hours of a demo's windows, took 0.16 s to read and parse; they grow
    by 240 an hour per product)."""
    folder = windows_dir(monitoring_dir, product)
    named = []
    for path in folder.glob("*.json") if folder.is_dir() else ():
        end_second = path.stem.rsplit("-", 1)[-1]
        if end_second.isdigit() and (until is None or int(end_second) <= until):
            named.append((int(end_second), path.stem, path))
    # Windows ending in `until`'s own second may still end after it: read those beyond the limit.
    same_second = 0 if until is None else sum(end == int(until) for end, _, _ in named)
    newest = sorted(named)[-(HISTORY_LIMIT + same_second) :]
    found = [s for _, _, path in newest if (s := read_summary(path)) is not None]
    found = [s for s in found if until is None or s["verdict"]["end"] <= until]
    found.sort(key=lambda s: (s["verdict"]["end"], s["verdict"]["window_id"]))
    return found[-HISTORY_LIMIT:]


def read_history(
    monitoring_dir: Path, product: str, until: float | None = None
) -> list[WindowVerdict]:
    """Verdicts of the product's latest windows ending at or before `until` (default: all),
    oldest first (by window end)."""
    return [
        WindowVerdict.from_dict(s["verdict"])
        for s in read_summaries(monitoring_dir, product, until)
    ]
