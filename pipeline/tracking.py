"""What every training flow does with MLflow: one run per flow run, a registered version per
trained model, and the registration gate applied to the aliases. Shared by both models."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsd.registry import CHALLENGER, CHAMPION, REFERENCE_PATH, ModelRegistry
from pipeline.registration_gate import DeltaInterval, GatePolicy, GateVerdict, gate_verdict

if TYPE_CHECKING:
    import pandas as pd


# Pinned requirements recorded with every model: exact, so a served model installs what it was
# trained with, and fast (MLflow's inference of requirements costs ~7 s per model).
def pinned_requirements(*packages: str) -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in packages]


@dataclass
class RegistrationOutcome:
    """What a training flow reports: the new version and what the gate decided for it."""

    model_name: str
    version: str
    run_id: str
    decision: str
    reasons: list[str]
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    aliases_after: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChampionOnWindow:
    """The champion scored on the candidate's own evaluation window: its metrics, and (where the
    flow can pair the two models' scores row by row) the interval of the candidate's delta."""

    metrics: dict[str, float]
    delta_interval: DeltaInterval | None = None


_VERDICT_WORDS = {
    "champion": "accepted as @champion",
    "challenger": "accepted as @challenger",
    "rejected": "REFUSED by the registration gate (no alias moved)",
}


def verdict_line(model_name: str, version: str, decision: str, reasons: Sequence[str]) -> str:
    """The gate's verdict in one sentence, as the registry, the flow run and the CLI show it."""
    return f"{model_name} v{version}: {_VERDICT_WORDS[decision]}: {'; '.join(reasons)}"


def verdict_state(outcome: dict[str, Any]) -> Any:
    """The training flow's final state, carrying the outcome: a refused model ends the flow run
    in a state named "Refused" (type COMPLETED: the flow did its job) with the verdict as its
    message, and every run gets a markdown artifact with the verdict and metrics, so the
    Prefect UI tells a refusal from a success at a glance."""
    import re

    from prefect.artifacts import create_markdown_artifact
    from prefect.states import Completed

    line = verdict_line(
        outcome["model_name"], outcome["version"], outcome["decision"], outcome["reasons"]
    )
    champion = outcome.get("champion_metrics") or {}
    rows = "\n".join(
        f"| {k} | {v:.4f} | {'' if k not in champion else f'{champion[k]:.4f}'} |"
        for k, v in outcome["metrics"].items()
    )
    create_markdown_artifact(
        key=re.sub(r"[^a-z0-9-]+", "-", f"{outcome['model_name']}-registration-verdict".lower()),
        markdown=f"**{line}**\n\n| metric | this version | champion, same window |\n"
        f"| --- | --- | --- |\n{rows}\n",
        description=line[:500],
    )
    name = "Refused" if outcome["decision"] == "rejected" else "Completed"
    return Completed(name=name, message=line[:1000], data=outcome)


def start_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> Any:
    """Open the flow's MLflow run, tagged with the Prefect flow run; use it as a context manager,
    which ends the run FAILED when the block raises and FINISHED otherwise."""
    import mlflow
    from prefect.runtime import flow_run

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    # (flow_run.id falls back to PREFECT__FLOW_RUN_ID itself.)
    tags = {**tags, "prefect.flow_run_id": str(flow_run.id or "")}
    return mlflow.start_run(run_name=run_name, tags=tags)


def active_run_id() -> str:
    """Id of the MLflow run the flow opened (registration happens inside it)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: register inside the flow's run")
    return str(run.info.run_id)


def log_figure(fig: Any, name: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, f"plots/{name}.png")
    plt.close(fig)


def log_json(data: Any, name: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, default=str))
        mlflow.log_artifact(str(path))


def log_reference(frame: pd.DataFrame) -> None:
    """Log `frame` as the active run's reference (`mlsd.registry.REFERENCE_PATH`): the sample
    of its data's latest days that monitoring judges live windows against and the canary
    compares the version's live scores with."""
    import mlflow

    folder, name = REFERENCE_PATH.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=folder)


def register_and_gate(
    *,
    registry: ModelRegistry,
    model_name: str,
    model_uri: str,
    run_id: str,
    policy: GatePolicy,
    data_checks_passed: bool,
    metrics: dict[str, float],
    champion_metrics_on_same_window: Callable[[str], ChampionOnWindow | None],
    version_tags: dict[str, str],
) -> RegistrationOutcome:
    """Register the run's model as a new version, judge it, and move aliases only if it passed.

    The version is registered whatever the verdict, so the registry records every attempt and
    why it was refused; only a passing version gets an alias.
    """
    import mlflow

    champion = registry.version_of(model_name, CHAMPION)
    champion_metrics: dict[str, float] | None = None
    interval: DeltaInterval | None = None
    if champion:
        # A champion that cannot be scored on this window (e.g. trained on features that no
        # longer exist) gives no comparison ({}): the candidate is at most @challenger.
        try:
            on_window = champion_metrics_on_same_window(champion)
        except (KeyError, ValueError) as err:
            on_window = None
            mlflow.set_tag("gate.champion_error", f"{type(err).__name__}: {err}"[:500])
        champion_metrics = on_window.metrics if on_window else {}
        interval = on_window.delta_interval if on_window else None
    verdict: GateVerdict = gate_verdict(
        policy, data_checks_passed, metrics, champion_metrics, interval
    )
    mv = mlflow.register_model(model_uri, model_name, tags=version_tags)
    version = str(mv.version)
    client = registry.client
    client.set_model_version_tag(model_name, version, "gate.decision", verdict.decision)
    client.set_model_version_tag(
        model_name, version, "gate.reasons", " | ".join(verdict.reasons)[:4000]
    )
    if champion_metrics:
        client.set_model_version_tag(
            model_name,
            version,
            f"gate.champion_v{champion}.{policy.metric}",
            f"{champion_metrics.get(policy.metric)}",
        )
    if interval is not None:
        client.set_model_version_tag(
            model_name,
            version,
            "gate.delta_interval",
            f"[{interval.low:+.4f}, {interval.high:+.4f}]",
        )
        mlflow.log_metrics({"gate_delta_low": interval.low, "gate_delta_high": interval.high})
    if verdict.decision == "champion":
        registry.move_alias(model_name, CHAMPION, version, verdict.reasons[0])
    elif verdict.decision == "challenger":
        registry.move_alias(model_name, CHALLENGER, version, verdict.reasons[0])
    mlflow.set_tags({"gate.decision": verdict.decision, "registered.version": version})
    # Every attempt is registered, so the newest version may be a refused one: say so where the
    # registry's UI shows a version first.
    client.update_model_version(
        model_name,
        version,
        description=verdict_line(model_name, version, verdict.decision, verdict.reasons),
    )
    return RegistrationOutcome(
        model_name=model_name,
        version=version,
        run_id=run_id,
        decision=verdict.decision,
        reasons=list(verdict.reasons),
        metrics=metrics,
        champion_metrics=champion_metrics,
        aliases_after=registry.aliases(model_name),
    )


def announce(product: str, outcome: dict[str, Any]) -> None:
    """Tell the timeline what the gate decided (`mlsd.gate.verdict`); a version that became
    @challenger also emits `mlsd.challenger.registered`, which starts the rollout deployment."""
    import mlsd.events as events

    version = outcome["version"]
    payload = {
        "version": int(version),  # a number: the rollout deployment takes it as its int parameter
        "decision": outcome["decision"],
        "reason": "; ".join(outcome["reasons"])[:300],
        "metrics": {k: round(float(v), 4) for k, v in outcome["metrics"].items() if k in _HEADLINE},
        "champion_metrics": {
            k: round(float(v), 4)
            for k, v in (outcome.get("champion_metrics") or {}).items()
            if k in _HEADLINE
        },
    }
    related = [events.version_related(product, version)]
    resource = events.model_resource(product)
    events.emit(events.GATE_VERDICT, resource, payload, related)
    if outcome["decision"] == "challenger":
        events.emit(events.CHALLENGER_REGISTERED, resource, payload, related)


# The figures a person compares in the timeline (fraud, then recommender).
_HEADLINE = ("pr_auc", "precision", "recall", "threshold", "ndcg_at_10", "recall_at_10")


def onnx_beside(estimator: Any, folder: Path) -> list[str]:
    """The fraud model's checked ONNX graph written into `folder`, as `extra_files` for MLflow's
    `log_model`: it then lands among the registry version's files, beside the scikit-learn
    model, where model servers (and any standard ONNX runtime) read it. When ONNX cannot express
    the model, or the graph disagrees with it, nothing is written and the run's tag
    `onnx.refused` says why (the servers then score with scikit-learn)."""
    import mlflow

    from models.fraud_onnx import ONNX_FILE, OnnxRefused, export_fraud_onnx, fraud_scorer

    try:
        graph = export_fraud_onnx(estimator)
    except OnnxRefused as err:
        refused = str(err)
    else:
        scorer, refused = fraud_scorer(estimator, graph)
        if scorer is not None:
            path = folder / ONNX_FILE
            path.write_bytes(graph)
            return [str(path)]
    mlflow.set_tag("onnx.refused", refused[:500])
    return []
