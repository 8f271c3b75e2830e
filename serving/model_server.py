"""The KServe model servers: one process per product, hosting pinned registry versions as models
`<product>-v<N>`, each loaded or unloaded at run time through the V2 model repository extension.

    python -m serving.model_server --product fraud --versions 3 4 --http-port 8081

The model classes are thin: decoding, feature lookup, scoring and encoding live in
`serving.inference`, where tests call them directly.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# KServe reads its own flags from sys.argv when imported (`parse_known_args`, prefix matching
# included). None of this module's flags is a prefix of one of KServe's, so they pass by.
import kserve
import orjson
from fastapi import Request, Response
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.utils.utils import cpu_count as kserve_cpu_count

from mlsd.settings import Settings
from mlsd.telemetry import silence_telemetry
from serving.inference import (
    FRAUD_INPUTS,
    FRAUD_OUTPUTS,
    RECSYS_INPUTS,
    RECSYS_OUTPUTS,
    FraudVersion,
    InputSpec,
    OutputSpec,
    RecsysVersion,
    RequestError,
    champion_version,
    fraud_features,
    fraud_v1_predictions,
    fraud_v2_outputs,
    limit_native_threads,
    load_fraud_version,
    load_recsys_version,
    recommend_for,
    recsys_v1_predictions,
    recsys_v2_outputs,
    rows_from_v1,
    rows_from_v2,
    score_fraud,
    tensor_metadata,
    warm_up_fraud,
    warm_up_recsys,
)
from serving.names import PRODUCTS, Product, parse_served_name, served_name
from serving.runtime import event_loop_factory, freeze_heap, lower_cpu_priority

# KServe configures its own logger (format, level); the lab's server lines go to the same place.
logger = logging.getLogger("kserve")


# --- the models -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedRequest:
    """A request in contract types, and how to answer it (the protocol it came in)."""

    protocol: Literal["v1", "v2", "grpc"]
    request_id: str | None
    rows: list[dict[str, Any]]


def decode_request(payload: Any, specs: Sequence[InputSpec]) -> DecodedRequest:
    """V1 body or V2 InferRequest -> rows; bad input -> KServe's InvalidInput (HTTP 400)."""
    try:
        if isinstance(payload, InferRequest):
            protocol: Literal["v2", "grpc"] = "grpc" if payload.from_grpc else "v2"
            return DecodedRequest(protocol, payload.id, rows_from_v2(payload.inputs, specs))
        return DecodedRequest("v1", None, rows_from_v1(payload, specs))
    except RequestError as err:
        raise InvalidInput(str(err)) from err


def v2_response(
    model: PinnedModel, request: DecodedRequest, outputs: list[tuple[OutputSpec, list[Any]]]
) -> InferResponse | dict[str, Any]:
    """The V2 answer: for REST the response body itself, for gRPC KServe's InferResponse.

    (KServe's InferResponse.to_rest turns every output list into a numpy array and back, about
    a millisecond per request; the REST body is plain JSON that needs none of it.)
    """
    response_id = request.request_id or uuid.uuid4().hex
    if request.protocol == "v2":
        return {
            "id": response_id,
            "model_name": model.name,
            "model_version": model.version,
            "outputs": [
                {"name": spec.name, "shape": [len(data)], "datatype": spec.datatype, "data": data}
                for spec, data in outputs
            ],
        }
    return InferResponse(
        response_id=response_id,
        model_name=model.name,
        model_version=model.version,
        infer_outputs=[
            InferOutput(name=spec.name, shape=[len(data)], datatype=spec.datatype, data=data)
            for spec, data in outputs
        ],
    )


class PinnedModel(kserve.Model):
    """One registry version under its permanent name; loaded before it is registered."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]

    def __init__(self, name: str, version: str, settings: Settings) -> None:
        super().__init__(name)
        self.version = version
        self.settings = settings
        self.ready = True

    def validate(self, payload: Any) -> Any:
        # Inputs are checked against the contract in preprocess, naming the input at fault.
        return payload

    def get_input_types(self) -> list[dict[str, Any]]:
        return tensor_metadata(self.inputs)

    def get_output_types(self) -> list[dict[str, Any]]:
        return tensor_metadata(self.outputs)

    def metadata_parameters(self) -> dict[str, str | float]:
        """What the V2 model metadata adds under `parameters`: the version and its features."""
        raise NotImplementedError


class FraudModel(PinnedModel):
    """`fraud-vN`: calibrated fraud score, cost-model decision and rule reasons per transaction."""

    inputs = FRAUD_INPUTS
    outputs = FRAUD_OUTPUTS

    def __init__(self, served: FraudVersion, settings: Settings) -> None:
        super().__init__(served_name("fraud", served.version), served.version, settings)
        self.served = served

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        request = decode_request(payload, self.inputs)
        try:
            features = fraud_features(request.rows, self.served.feature_service, self.settings)
        except RequestError as err:
            raise InvalidInput(str(err)) from err
        return request, features

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        request, features = payload
        return request, score_fraud(self.served, features)

    def postprocess(self, result: Any, headers: dict[str, str] | None = None, *_: Any) -> Any:
        request, predictions = result
        if request.protocol == "v1":
            return fraud_v1_predictions(predictions)
        return v2_response(self, request, fraud_v2_outputs(predictions))

    def metadata_parameters(self) -> dict[str, str | float]:
        return {
            "model_version": self.served.model_version,
            "registered_model": self.settings.training.model_name("fraud"),
            "feature_service": self.served.feature_service,
            "features": ",".join(self.served.features),
            "threshold": self.served.threshold,
            "scoring": self.served.scoring_path,
        }


class RecsysModel(PinnedModel):
    """`recsys-vN`: top-k items per user, two-stage, with popularity for users it cannot place."""

    inputs = RECSYS_INPUTS
    outputs = RECSYS_OUTPUTS

    def __init__(self, served: RecsysVersion, settings: Settings) -> None:
        super().__init__(served_name("recsys", served.version), served.version, settings)
        self.served = served

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        # The online lookups of the ranker depend on retrieval's candidates, so they happen in
        # predict (inside `recommend`), not here.
        return decode_request(payload, self.inputs)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        try:
            return payload, [recommend_for(self.served, row, self.settings) for row in payload.rows]
        except RequestError as err:
            raise InvalidInput(str(err)) from err

    def postprocess(self, result: Any, headers: dict[str, str] | None = None, *_: Any) -> Any:
        request, recommendations = result
        if request.protocol == "v1":
            return recsys_v1_predictions(recommendations)
        return v2_response(self, request, recsys_v2_outputs(recommendations))

    def metadata_parameters(self) -> dict[str, str | float]:
        return {
            "model_version": self.served.model_version,
            "registered_model": self.settings.training.model_name("recsys"),
            "feature_service": self.served.feature_service,
            "features": ",".join(self.served.features),
            "candidates": self.served.n_candidates,
        }


def load_pinned_model(
    product: Product, version: str, settings: Settings, tracking_uri: str
) -> PinnedModel:
    """Fetch one registry version, answer one made-up request with it, and wrap it as the model
    `<product>-v<version>`: ready means the first real request is as fast as any other."""
    if product == "fraud":
        fraud = load_fraud_version(settings, version, tracking_uri)
        warm_up_fraud(fraud, settings)
        return FraudModel(fraud, settings)
    recsys = load_recsys_version(settings, version, tracking_uri)
    warm_up_recsys(recsys, settings)
    return RecsysModel(recsys, settings)


# --- the repository: versions loaded and unloaded while the server runs ---------------------


class VersionRepository(ModelRepository):
    """The versions one product's server hosts. `load("fraud-v4")` fetches `models:/fraud/4`
    beside what already serves; `unload` drops one. Names of another product are refused."""

    def __init__(self, product: Product, settings: Settings, tracking_uri: str) -> None:
        # KServe's models_dir (a mounted volume) is not used: versions come from the registry.
        super().__init__(models_dir=str(settings.data_dir))
        self.product = product
        self.settings = settings
        self.tracking_uri = tracking_uri
        self._loading: dict[str, asyncio.Lock] = {}

    def version_of(self, name: str) -> str:
        """The registry version `name` serves; ValueError for a malformed or foreign name."""
        product, version = parse_served_name(name)
        if product != self.product:
            raise ValueError(f"this server hosts {self.product} versions, not {name!r}")
        return version

    def build(self, name: str) -> PinnedModel:
        return load_pinned_model(
            self.product, self.version_of(name), self.settings, self.tracking_uri
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
    from mlflow.exceptions import MlflowException

    return isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST"


# --- the server -----------------------------------------------------------------------------


class LabModelServer(kserve.ModelServer):
    """KServe's ModelServer on one address of our choosing, single-process, with the model
    metadata extended by each version's features.

    KServe 0.21 builds its uvicorn config with ``host="0.0.0.0"`` hard-coded and has no option
    for it; the config is only read when serving starts, so `start` sets the host in between.
    """

    def __init__(
        self,
        *,
        bind_host: str,
        access_log: bool,
        registered_models: VersionRepository,
        **kwargs: Any,
    ) -> None:
        super().__init__(registered_models=registered_models, **kwargs)
        self.bind_host = bind_host
        self.access_log = access_log
        self.model_repository_extension = VersionRepositoryExtension(registered_models)
        if not access_log:
            # KServe's timing middleware logs every request on the trace logger.
            logging.getLogger("kserve.trace").setLevel(logging.WARNING)

    def start(self, models: list[kserve.model.BaseKServeModel]) -> None:
        """ModelServer.start for one REST worker (and gRPC if enabled), bound to bind_host."""
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
        from kserve.model_server import app
        from kserve.protocol.grpc.server import GRPCServer
        from kserve.protocol.rest.server import RESTServer

        self._register_and_check_atleast_one_model_is_ready(models)
        rest = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        rest.config.host = self.bind_host
        if not self.access_log:
            # uvicorn wired its access logger when the config was built; unwire it here.
            rest.config.access_log = False
            logging.getLogger("uvicorn.access").handlers = []
            logging.getLogger("uvicorn.access").propagate = False
        self._rest_server = rest
        add_model_metadata_route(app, self)
        add_lean_infer_route(app, self)
        self.servers.append(rest.start())
        if self.enable_grpc:
            # KServe binds gRPC to [::] whatever the REST host (see ModelServerSettings).
            self._grpc_server = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.register_signal_handler()
        # ModelServer.start runs on asyncio's own loop (uvicorn's loop choice is bypassed when
        # KServe awaits the server itself); uvloop's costs less per request.
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            self._configure_loop(runner.get_loop())
            freeze_heap()
            runner.run(self._serve())

    def _configure_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """KServe's setup_event_loop, on the loop that actually serves."""
        loop.set_exception_handler(self._custom_exception_handler or self.default_exception_handler)
        # KServe's own count: it honours CPU affinity and a container's CPU limit.
        workers = self.max_asyncio_workers or min(32, kserve_cpu_count() + 4)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=workers))


def add_model_metadata_route(app: Any, server: kserve.ModelServer) -> None:
    """`GET /v2/models/{name}` with `versions` and `parameters` (model version, features).

    KServe's own handler validates against a response model that keeps only name, platform,
    inputs and outputs; this route is registered before KServe's, so it answers instead.
    """

    async def model_metadata(model_name: str) -> dict[str, Any]:
        metadata = await server.dataplane.model_metadata(model_name)  # 404 when unknown
        model = server.registered_models.get_model(model_name)
        if isinstance(model, PinnedModel):
            metadata["versions"] = [model.version]
            metadata["platform"] = "sklearn"
            metadata["parameters"] = model.metadata_parameters()
        return dict(metadata)

    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])


def add_lean_infer_route(app: Any, server: kserve.ModelServer) -> None:
    """`POST /v2/models/{name}/infer` without KServe's pydantic round trips.

    (FastAPI reads the handler's annotations from this module's globals: Request and Response
    are imported at the top for that.)

    KServe's handler validates the request into a pydantic model, converts it, then validates
    the response into another and runs FastAPI's encoder over it; this one reads the JSON with
    orjson straight into KServe's InferRequest (as KServe does for binary requests) and returns
    the encoded response as is. Same request and response bodies, same errors.
    """
    dataplane = server.dataplane

    async def infer(model_name: str, request: Request) -> Response:
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        body = await request.body()
        headers = dict(request.headers)
        json_length = int(headers.get(INFERENCE_CONTENT_LENGTH_HEADER, len(body)))
        try:
            infer_request = InferRequest.from_bytes(body, json_length, model_name)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InvalidInput):
                raise
            raise InvalidInput(
                f"not a V2 inference request: every input needs name, shape, datatype and "
                f"data ({type(err).__name__}: {err})"
            ) from err
        response, response_headers = await dataplane.infer(model_name, infer_request, headers)
        encoded, encoded_headers = dataplane.encode(model_name, response, headers, {})
        response_headers.update(encoded_headers)
        response_headers.pop("content-length", None)
        response_headers.pop("content-type", None)
        if isinstance(encoded, bytes):
            return Response(content=encoded, headers=response_headers)
        # orjson by hand: FastAPI 0.150 warns on every ORJSONResponse (a deprecation), and a
        # warning per request was a measurable share of the server's time.
        return Response(
            content=orjson.dumps(
                encoded, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
            ),
            media_type="application/json",
            headers=response_headers,
        )

    app.add_api_route("/v2/models/{model_name}/infer", infer, methods=["POST"])


# --- entry point ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.model_server",
        description="Serve pinned registry versions of one product over KServe V1/V2.",
    )
    parser.add_argument("--product", required=True, choices=PRODUCTS)
    parser.add_argument(
        "--versions",
        nargs="*",
        default=[],
        metavar="N",
        help="Registry versions to load at start [default: the version @champion points at].",
    )
    parser.add_argument(
        "--http-port", type=int, help="REST port [default: model_servers.<product>.http_port]."
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="gRPC port, used when model_servers.grpc_enabled [default: settings].",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow server of the registry [default: MLFLOW_TRACKING_URI, else the lab's MLflow].",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        choices=range(20),
        metavar="0-19",
        help="Lower this server's CPU priority by this much (a shadow server: "
        "model_servers.shadow_nice) [default: 0].",
    )
    parser.add_argument(
        "--sched-idle",
        action="store_true",
        help="Run under Linux's SCHED_IDLE policy: a core only when no other task wants it (a "
        "shadow server: model_servers.shadow_sched_idle).",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    silence_telemetry()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # log files, not a tty
    args = parse_args(argv)  # before the imports limit_native_threads makes: --help stays quick
    limit_native_threads()
    if args.nice or args.sched_idle:
        # Before the server's own threads start: they inherit it.
        lower_cpu_priority(args.nice, idle=args.sched_idle)
    settings = Settings()
    product: Product = args.product
    ports = settings.model_servers.product(product)
    tracking_uri = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or settings.mlflow_tracking_uri
    )
    versions = list(args.versions) or [champion_version(settings, product, tracking_uri)]
    server = LabModelServer(
        bind_host=settings.bind_host,
        access_log=settings.model_servers.access_log,
        http_port=args.http_port or ports.http_port,
        grpc_port=args.grpc_port or ports.grpc_port,
        enable_grpc=settings.model_servers.grpc_enabled,
        enable_latency_logging=settings.model_servers.access_log,
        registered_models=VersionRepository(product, settings, tracking_uri),
        workers=1,
    )
    models = [
        load_pinned_model(product, str(version), settings, tracking_uri) for version in versions
    ]
    logger.info("serving %s on %s", ", ".join(m.name for m in models), settings.bind_host)
    server.start(list(models))


if __name__ == "__main__":
    main()
