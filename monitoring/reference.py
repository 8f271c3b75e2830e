"""The reference a window is judged against: a sample of the latest days of the serving
champion's own training data (model inputs as the prediction log records them, plus that
version's scores; `monitoring.reference_days`), logged with the version as the MLflow artifact
`reference/reference.parquet`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def load_champion_reference(
    tracking_uri: str,
    product: str,
    model_name: str,
    cache_dir: Path | None = None,
    keep_versions: int = 8,
) -> ChampionReference:
    """The serving champion's reference; ReferenceMissing (with the reason) when there is none.

    With `cache_dir`, what a version's run logged (the reference and its validation PR-AUC,
    fixed once it is trained) is kept there by run id (`joblib.Memory`), so a monitoring run
    asks the registry only which version is the champion: two calls instead of six and the
    artifact's download, on every window of every product (measured: the reference took a
    median of 5.7-13 s to load from the registry in a demo's runs on a busy 2-core machine).
    The `keep_versions` runs read most recently are kept (about 1 MB each)."""
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
    if cache_dir is None:
        frame, pr_auc = _logged_by_run(tracking_uri, product, model_name, version, mv.run_id)
    else:
        import joblib

        memory = joblib.Memory(cache_dir, verbose=0)
        logged = memory.cache(_logged_by_run, ignore=["tracking_uri"])
        # A missing reference raises inside: an exception is never cached, so it is asked again.
        frame, pr_auc = logged(tracking_uri, product, model_name, version, mv.run_id)
        memory.reduce_size(items_limit=keep_versions)
    threshold = mv.tags.get("threshold")
    return ChampionReference(
        product=product,
        version=version,
        frame=frame,
        validation_pr_auc=pr_auc,
        threshold=float(threshold) if threshold else None,
    )


def _logged_by_run(
    tracking_uri: str, product: str, model_name: str, version: str, run_id: str
) -> tuple[pd.DataFrame, float | None]:
    """(The reference, the validation PR-AUC) that version `version`'s run `run_id` logged."""
    from mlsd.registry import ModelRegistry

    registry = ModelRegistry(tracking_uri)
    frame = registry.run_reference(run_id)
    if frame is None:
        raise ReferenceMissing(
            f"{product}: champion v{version} has no reference ({REFERENCE_PATH} is not among the "
            f"artifacts of run {run_id}); it was trained before references were logged: "
            f"retrain it (`mlsd train {product}`) to monitor it"
        )
    return frame, registry.client.get_run(run_id).data.metrics.get("pr_auc")
