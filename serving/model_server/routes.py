"""The model server's own routes, registered before KServe's: model metadata with the version's
features, and a lean V2 infer route."""

from __future__ import annotations

from typing import Any

import kserve
import orjson
from fastapi import Request, Response
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferRequest

from serving.model_server.models import PinnedModel


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
