"""The reference a window is judged against: a sample of the latest days of the serving
champion's own training data (model inputs as the prediction log records them, plus that
version's scores; `monitoring.reference_days`), logged with the version as the MLflow artifact
`reference/reference.parquet`."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mlsd.registry import REFERENCE_PATH


class ReferenceMissing(RuntimeError):
    """No reference to judge a window against: nothing is decided, and the message says why."""


@dataclass(frozen=True)
class ChampionReference:
    product: str
    version: str
    frame: pd.DataFrame
    validation_pr_auc: float | None  # the version's own PR-AUC on its validation window
    threshold: float | None  # fraud: the version's decision threshold


def load_champion_reference(tracking_uri: str, product: str, model_name: str) -> ChampionReference:
    """The serving champion's reference; ReferenceMissing (with the reason) when there is none."""
    from mlsd.registry import ModelRegistry

    registry = ModelRegistry(tracking_uri)
    version = registry.version_of(model_name, "champion")
    if version is None:
        raise ReferenceMissing(
            f"{product}: no @champion version of model {model_name!r} in MLflow at "
            f"{tracking_uri}: train one first (`mlsd train {product}`)"
        )
    mv = registry.client.get_model_version(model_name, version)
    if not mv.run_id:
        raise ReferenceMissing(f"{product}: champion v{version} has no MLflow run to read from")
    frame = registry.reference(model_name, version)
    if frame is None:
        raise ReferenceMissing(
            f"{product}: champion v{version} has no reference ({REFERENCE_PATH} is not among the "
            f"artifacts of run {mv.run_id}); it was trained before references were logged: "
            f"retrain it (`mlsd train {product}`) to monitor it"
        )
    metrics = registry.client.get_run(mv.run_id).data.metrics
    threshold = mv.tags.get("threshold")
    return ChampionReference(
        product=product,
        version=version,
        frame=frame,
        validation_pr_auc=metrics.get("pr_auc"),
        threshold=float(threshold) if threshold else None,
    )
