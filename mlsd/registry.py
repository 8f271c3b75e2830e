"""The model registry as the lab uses it: MLflow versions, the @champion/@challenger aliases, and
the history of which version held which alias when.

A leaf module like `mlsd.settings`: training (which proposes challengers) and serving (which
promotes and rolls back) both use it, and neither imports the other. MLflow is imported lazily.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

CHAMPION, CHALLENGER = "champion", "challenger"
_HISTORY_TAG = "alias_history"
_HISTORY_KEEP = 40  # tags are bounded in size; the full story is also in each version's tags


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: who held it from when, and why."""

    at: str
    alias: str
    version: str | None  # None: the alias was removed
    previous: str | None
    reason: str


# Where a version's monitoring reference is logged with its run: pipeline.tracking writes it,
# monitoring judges windows against it, the router's canary reads the challenger's scores in it.
REFERENCE_DIR = "reference"
REFERENCE_PATH = f"{REFERENCE_DIR}/reference.parquet"


def _request_headers_without_feast() -> None:
    """Register MLflow's request-header providers, leaving out Feast's.

    Feast registers an MLflow request-header plugin (entry point `mlflow.request_header_provider`:
    a token for Feast's own MLflow data sources, which the lab does not use). MLflow loads every
    such plugin at its first REST call, and loading Feast's imports all of Feast: measured here,
    a fresh process that reads a model version took 9.1-9.3 s to import with it and 3.8-4.5 s
    without (a model server's reading child; `mlsd status` likewise). The headers MLflow sends are the same
    (its user agent and client version; MLFLOW_TRACKING_TOKEN is MLflow's own).

    Done once, before MLflow's header registry is first imported; a process that imported it
    already (a training flow, which uses Feast anyway) keeps what it has. Should MLflow stop
    listing plugins through `mlflow.utils.plugins.get_entry_points`, the plugin loads as before:
    slower, not wrong."""
    import sys

    if "mlflow.tracking.request_header.registry" in sys.modules:
        return
    import mlflow.utils.plugins as plugins

    listed = getattr(plugins, "get_entry_points", None)
    if listed is None:
        return

    def without_feast(group: str) -> list[Any]:
        found = listed(group)
        if group != "mlflow.request_header_provider":
            return found
        return [entry for entry in found if entry.value.split(".")[0] != "feast"]

    plugins.get_entry_points = without_feast  # read when MLflow's header registry is imported
    try:
        import mlflow.tracking.request_header.registry  # noqa: F401
    finally:
        plugins.get_entry_points = listed


class ModelRegistry:
    """Thin, typed access to one MLflow registry."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        _request_headers_without_feast()
        self.tracking_uri = tracking_uri
        self.client: MlflowClient = MlflowClient(
            tracking_uri=tracking_uri, registry_uri=tracking_uri
        )

    def version_of(self, name: str, alias: str) -> str | None:
        """The version an alias points at, or None when unset (or the model does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def version_exists(self, name: str, version: str) -> bool:
        """Whether `name` has version `version`; raises when the registry cannot say (it did
        not answer), so a caller never reads an outage as a missing version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(name, version)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return False
            raise
        return True

    def aliases(self, name: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return {k: str(v) for k, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException:
            return {}

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    @contextlib.contextmanager
    def downloaded(self, name: str, version: str) -> Iterator[Path]:
        """The files of version `version` of `name`, in a temporary folder removed afterwards.

        Resolved through this registry's own client. (`mlflow.artifacts.download_artifacts`
        with a `models:/` URI asks MLflow's *default* registry for part of the lookup, i.e.
        MLFLOW_TRACKING_URI or an mlflow.db in the working directory, whatever URI it is given.)
        """
        import os

        import mlflow

        # A progress bar is for a person watching a download; here it is a flow's internal
        # step, and its bar only buried the gate's verdict in the CLI's output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        source = self.client.get_model_version_download_uri(name, version)
        with tempfile.TemporaryDirectory(prefix=f"{name}-v{version}-") as tmp:
            yield Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=tmp, tracking_uri=self.tracking_uri
                )
            )

    def reference(self, name: str, version: str) -> pd.DataFrame | None:
        """The monitoring reference logged with version `version`'s run (REFERENCE_PATH); None
        when the version has no run or its run none (trained before references were logged).
        A registry that does not answer raises, so an outage never reads as a missing one."""
        run_id = self.client.get_model_version(name, version).run_id
        return self.run_reference(run_id) if run_id else None

    def run_reference(self, run_id: str) -> pd.DataFrame | None:
        """The monitoring reference run `run_id` logged (REFERENCE_PATH); None when it logged
        none. A registry that does not answer raises."""
        import mlflow
        import pandas as pd

        logged = self.client.list_artifacts(run_id, REFERENCE_DIR)
        if REFERENCE_PATH not in {f.path for f in logged}:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=REFERENCE_PATH,
                dst_path=tmp,
                tracking_uri=self.tracking_uri,
            )
            return pd.read_parquet(local)

    def load_sklearn(self, name: str, version: str) -> Any:
        """The scikit-learn model registered as version `version` of `name`."""
        import mlflow

        with self.downloaded(name, version) as folder:
            return mlflow.sklearn.load_model(str(folder))

    def history(self, name: str) -> list[AliasEvent]:
        from mlflow.exceptions import MlflowException

        try:
            raw = self.client.get_registered_model(name).tags.get(_HISTORY_TAG, "[]")
        except MlflowException:
            return []
        return [AliasEvent(**e) for e in json.loads(raw)]

    def move_alias(self, name: str, alias: str, version: str | None, reason: str) -> AliasEvent:
        """Point `alias` at `version` (None removes it) and record the move on both versions."""
        previous = self.version_of(name, alias)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if version is None:
            if previous is not None:
                self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, version)
            self.client.set_model_version_tag(name, version, f"{alias}.since", now)
            self.client.set_model_version_tag(name, version, f"{alias}.reason", reason[:500])
        if previous is not None and previous != version:
            self.client.set_model_version_tag(name, previous, f"{alias}.until", now)
        event = AliasEvent(now, alias, version, previous, reason[:300])
        events = [*[e.__dict__ for e in self.history(name)][-(_HISTORY_KEEP - 1) :], event.__dict__]
        self.client.set_registered_model_tag(name, _HISTORY_TAG, json.dumps(events))
        return event

    def promote(self, name: str, reason: str) -> AliasEvent:
        """The challenger becomes champion; the old champion is kept as `previous` for rollback."""
        challenger = self.version_of(name, CHALLENGER)
        if challenger is None:
            raise LookupError(f"{name} has no @{CHALLENGER} to promote")
        old = self.version_of(name, CHAMPION)
        event = self.move_alias(name, CHAMPION, challenger, reason)
        if old is not None and old != challenger:
            self.move_alias(name, "previous", old, f"replaced by v{challenger}")
        self.move_alias(name, CHALLENGER, None, f"promoted to @{CHAMPION}")
        return event

    def rollback(self, name: str, reason: str) -> AliasEvent:
        """@champion returns to the version that held it before (the `previous` alias)."""
        previous = self.version_of(name, "previous")
        if previous is None:
            raise LookupError(f"{name} has no earlier champion to roll back to")
        current = self.version_of(name, CHAMPION)
        event = self.move_alias(name, CHAMPION, previous, reason)
        self.move_alias(name, "previous", None, f"v{previous} is champion again")
        if current is not None:
            self.client.set_model_version_tag(name, current, "rolled_back", reason[:500])
        return event

    def describe(self, name: str) -> dict[str, Any]:
        """Aliases and versions at a glance (for `mlsd status`)."""
        return {
            "aliases": self.aliases(name),
            "history": [e.__dict__ for e in self.history(name)[-5:]],
        }
