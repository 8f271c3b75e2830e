"""The A/B readout's inputs: which experiment runs (the router's admin API), its arms' rows (the
prediction log), and each metric as successes over trials (`arm_counts`, pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mlsd.experiment_stats import ArmCounts


class LoggedRow(Protocol):
    @property
    def error(self) -> str | None: ...
    @property
    def decision(self) -> str | None: ...
    @property
    def label(self) -> int | None: ...
    @property
    def experiment(self) -> str | None: ...


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str  # successes / trials, in words
    higher_is_better: bool
    prior: float  # the rate assumed for the sample size until the champion shows one


# Proportion metrics only: a readout of a rate has an exact test and a sample-size formula.
METRICS: dict[str, Metric] = {
    "recall": Metric("recall", "labelled frauds the arm blocked", True, 0.5),
    "precision": Metric("precision", "blocks (or recommendations) that were right", True, 0.1),
    "flag_rate": Metric("flag_rate", "labelled answers that were blocks", False, 0.01),
    "error_rate": Metric("error_rate", "requests the arm's own model failed", False, 0.01),
    "engagement": Metric("engagement", "slates the listener played or clicked from", True, 0.1),
}
DEFAULT_METRIC = {"fraud": "recall", "recsys": "engagement"}
POSITIVE = frozenset({"block", "recommend"})


def arm_counts(rows: Iterable[LoggedRow], metric: str) -> ArmCounts:
    """One arm's successes and trials for `metric` from its logged rows. A row the arm's own
    model did not answer (error) counts only towards error_rate: a fallback's answer says
    nothing about the model under test."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, not {metric!r}")
    successes = trials = 0
    for row in rows:
        if metric == "error_rate":
            trials += 1
            successes += row.error is not None
            continue
        if row.error is not None:
            continue
        flagged = row.decision in POSITIVE
        if metric == "engagement":
            trials += 1  # a slate without feedback was not engaged with
            successes += row.label == 1
        elif row.label is None:
            continue
        elif metric == "recall" and row.label == 1:
            trials += 1
            successes += flagged
        elif metric == "precision" and flagged:
            trials += 1
            successes += row.label == 1
        elif metric == "flag_rate":
            trials += 1
            successes += flagged
    return ArmCounts(successes, trials)


def running_split(status: dict[str, Any]) -> dict[str, Any] | None:
    """The product's split (experiment or canary) from the router's status, or None."""
    split = status.get("split")
    return split if isinstance(split, dict) else None


async def experiment_rows(
    settings: Any, product: str, split: dict[str, Any], until: float
) -> dict[str, list[Any]]:
    """Both arms' served rows since the split began, of this split only (its hash salt)."""
    from serving.prediction_log import open_prediction_log

    log = await open_prediction_log(settings)
    try:
        rows: dict[str, list[Any]] = {}
        for arm in ("champion", "challenger"):
            window = await log.window(
                product,  # type: ignore[arg-type]  # checked by the CLI
                arm,
                float(split["started_at"]),
                until,
                role="served",
            )
            rows[arm] = [r for r in window if r.experiment == split["name"]]
        return rows
    finally:
        await log.close()
