"""The model classes KServe serves: one pinned registry version each, thin (decoding, features,
scoring and encoding live in serving.inference, where tests call them directly)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import kserve
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from mlsd.settings import Settings
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
    fraud_features,
    fraud_v1_predictions,
    fraud_v2_outputs,
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
from serving.names import Product, served_name


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
    product: Product,
    version: str | None,
    settings: Settings,
    tracking_uri: str,
    isolated: bool = True,
) -> PinnedModel:
    """Fetch one registry version (None: the one @champion points at now), answer one made-up
    request with it, and wrap it as the model `<product>-v<version>`: ready means the first
    real request is as fast as any other. `isolated`: read the version in a child process
    (serving.inference.startup.in_child), so this one keeps none of what read it."""
    if product == "fraud":
        fraud = load_fraud_version(settings, version, tracking_uri, isolated)
        warm_up_fraud(fraud, settings)
        return FraudModel(fraud, settings)
    recsys = load_recsys_version(settings, version, tracking_uri, isolated)
    warm_up_recsys(recsys, settings)
    return RecsysModel(recsys, settings)
