"""The model repository: versions loaded and unloaded while the server runs (KServe's V2
repository extension), with a client's mistakes as 4xx."""

from __future__ import annotations

import asyncio

from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from mlsd.settings import Settings
from serving.model_server.models import PinnedModel, load_pinned_model
from serving.names import Product, parse_served_name
from serving.runtime import freeze_heap


class VersionRepository(ModelRepository):
    """The versions one product's server hosts. `load("fraud-v4")` fetches `models:/fraud/4`
    beside what already serves; `unload` drops one. Names of another product are refused."""

    def __init__(
        self, product: Product, settings: Settings, tracking_uri: str, isolated: bool = True
    ) -> None:
        # KServe's models_dir (a mounted volume) is not used: versions come from the registry.
        super().__init__(models_dir=str(settings.data_dir))
        self.product = product
        self.settings = settings
        self.tracking_uri = tracking_uri
        self.isolated = isolated  # read each version in a child process (load_pinned_model)
        self._loading: dict[str, asyncio.Lock] = {}

    def version_of(self, name: str) -> str:
        """The registry version `name` serves; ValueError for a malformed or foreign name."""
        product, version = parse_served_name(name)
        if product != self.product:
            raise ValueError(f"this server hosts {self.product} versions, not {name!r}")
        return version

    def build(self, name: str) -> PinnedModel:
        return load_pinned_model(
            self.product, self.version_of(name), self.settings, self.tracking_uri, self.isolated
        )

    async def load(self, name: str) -> bool:
        """Load while serving: the download and unpickling run in a worker thread, so the
        versions already loaded keep answering; concurrent loads of one name load it once."""
        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:
            if self.get_model(name) is None:
                self.update(await asyncio.to_thread(self.build, name))
                freeze_heap()  # the new version is as long-lived as the first ones
        return True


class VersionRepositoryExtension(ModelRepositoryExtension):
    """KServe's V2 repository extension, with the client's mistakes as 4xx instead of 503: a
    malformed or foreign name is 400, a version the registry does not have is 404."""

    def __init__(self, versions: VersionRepository) -> None:
        super().__init__(model_registry=versions)
        self.versions = versions

    async def load(self, model_name: str) -> None:
        try:
            self.versions.version_of(model_name)
        except ValueError as err:
            raise InvalidInput(str(err)) from err
        try:
            await self.versions.load(model_name)
        except Exception as err:
            if _is_missing_version(err):
                raise ModelNotFound(model_name) from err
            raise ModelNotReady(model_name, f"{type(err).__name__}: {err}") from err
        if not await self.versions.is_model_ready(model_name):
            raise ModelNotReady(model_name)


def _is_missing_version(err: Exception) -> bool:
    """MLflow's refusal of an unknown version, raised here (`MlflowException`) or carried out
    of the process that read the version (`serving.inference.startup.RegistryRefused`)."""
    return getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"
