"""Drift of one window against the champion's reference, measured by Evidently (0.7 API).

One `Report`: `DataDriftPreset` over the model's inputs as logged (each column judged by the
method and threshold its type is given in `monitoring.drift` settings), `ValueDrift` on the
score, and PSI per input as a figure beside it. Evidently 0.7 gives no `drift_detected` flag per
column, so a column drifts when its score reaches its threshold (the comparison is here).

Why numeric inputs default to Wasserstein and not PSI: Evidently's PSI bins numeric columns into
equal-width (Sturges) bins over the combined range, so a heavy-tailed input (amounts, counts)
puts nearly every row in the first bin; amounts x1.8 (lognormal) scored PSI 0.085 there, under
any usual threshold, while the normed Wasserstein distance scored about 0.6. PSI per input is
still computed and shown, and `monitoring.drift.num_method = "psi"` switches to it.

Windows and references larger than `monitoring.drift.max_rows` are sampled down (fixed seed),
so the cost of a window is bounded whatever its size (benchmarks/bench_monitoring.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mlsd.settings import DriftSettings

SCORE = "score"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # numeric | categorical | score
    method: str
    threshold: float
    value: float
    psi: float | None

    @property
    def drifted(self) -> bool:
        return self.value >= self.threshold


@dataclass
class DriftResult:
    columns: list[ColumnDrift]
    score: ColumnDrift | None
    rows_current: int  # rows Evidently saw (after sampling)
    rows_reference: int
    snapshot: Any = field(repr=False, default=None)  # evidently Snapshot

    @property
    def inputs(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.kind != "score"]

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.inputs if c.drifted)

    @property
    def drifted_share(self) -> float:
        inputs = self.inputs
        return len(self.drifted_columns) / len(inputs) if inputs else 0.0

    @property
    def score_psi(self) -> float | None:
        return None if self.score is None else self.score.value


def sample(frame: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most max_rows rows, drawn without replacement with a fixed seed."""
    return frame if len(frame) <= max_rows else frame.sample(max_rows, random_state=seed)


def _psi_per_column(
    ref: pd.DataFrame, cur: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, float]:
    """PSI of each input by Evidently's own stat test, without a second report: each metric of
    a report renders its plots (most of a report's time), and PSI here is a figure to show."""
    from evidently.legacy.calculations.stattests import psi_stat_test
    from evidently.legacy.core import ColumnType

    out = {}
    for columns, kind in ((numeric, ColumnType.Numerical), (categorical, ColumnType.Categorical)):
        for c in columns:
            out[c] = float(psi_stat_test(ref[c], cur[c], kind, None).drift_score)
    return out


def measure_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    cfg: DriftSettings,
    name: str = "window",
    timestamp: Any = None,
) -> DriftResult:
    """Evidently's drift report of `current` against `reference` (both hold the columns and
    `score`); raises on a column missing from either, naming it."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    inputs = [*numeric, *categorical]
    has_score = SCORE in reference.columns and SCORE in current.columns
    wanted = [*inputs, *([SCORE] if has_score else [])]
    for label, frame in (("reference", reference), ("window", current)):
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ValueError(f"the {label} lacks the column(s) {', '.join(missing)}")
    ref = sample(reference[wanted], cfg.max_rows)
    cur = sample(current[wanted], cfg.max_rows)
    definition = DataDefinition(
        numerical_columns=[*numeric, *([SCORE] if has_score else [])],
        categorical_columns=categorical,
    )
    metrics: list[Any] = [
        DataDriftPreset(
            columns=inputs,
            num_method=cfg.num_method,
            num_threshold=cfg.num_threshold,
            cat_method=cfg.cat_method,
            cat_threshold=cfg.cat_threshold,
        )
    ]
    if has_score:
        metrics.append(
            ValueDrift(column=SCORE, method=cfg.score_method, threshold=cfg.score_threshold)
        )
    snapshot = Report(metrics).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
        name=name,
        timestamp=timestamp,
    )
    values: dict[tuple[str, str], float] = {}
    for result in snapshot.dict()["metrics"]:
        config = result.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            values[(config["column"], config["method"])] = float(result["value"])
    psi = _psi_per_column(ref, cur, numeric, categorical)

    def column(c: str, kind: str, method: str, threshold: float) -> ColumnDrift:
        return ColumnDrift(c, kind, method, threshold, values[(c, method)], psi.get(c))

    columns = [column(c, "numeric", cfg.num_method, cfg.num_threshold) for c in numeric]
    columns += [column(c, "categorical", cfg.cat_method, cfg.cat_threshold) for c in categorical]
    score = column(SCORE, "score", cfg.score_method, cfg.score_threshold) if has_score else None
    return DriftResult(columns, score, len(cur), len(ref), snapshot)
