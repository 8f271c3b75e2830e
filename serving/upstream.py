"""An async client of the model servers' Open Inference Protocol (KServe V2): infer, health,
and the model repository (load / unload), each call with its own time budget."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import orjson

from mlsd.http1 import DEFAULT_MAX_RESPONSE_BYTES, Http1Transport, ResponseTooLarge

FailureKind = Literal["timeout", "unavailable", "bad_status", "bad_response"]
# The default cap of one model server answer (status line, headers and body): above the largest
# legitimate one (computed: a V2 answer of 1,024 slates of 100 items, the longest shadow batch
# at the largest k, is 3.7 MB; of 1,024 fraud rows, 0.1 MB) and small enough that a broken or
# hostile server cannot make the router hold gigabytes.
MAX_RESPONSE_BYTES = DEFAULT_MAX_RESPONSE_BYTES


class UpstreamError(Exception):
    """A model server call that gave no usable answer; `kind` says how it failed."""

    def __init__(self, model: str, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{model}: {kind}: {detail}")
        self.model = model
        self.kind = kind
        self.detail = detail


def v2_datatype(values: Sequence[Any]) -> str:
    """The V2 tensor datatype of a column (strings BYTES, numbers FP64 / INT64, as the
    inference contract says)."""
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, bool):
        return "BOOL"
    if isinstance(sample, int):
        return "INT64"
    if isinstance(sample, float):
        return "FP64"
    return "BYTES"


def v2_request(columns: Mapping[str, Sequence[Any]], request_id: str | None = None) -> dict:
    """A V2 inference request body: one 1-D input tensor per column."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": [len(values)],
                "datatype": v2_datatype(values),
                "data": list(values),
            }
            for name, values in columns.items()
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def v2_outputs(body: Any, model: str) -> dict[str, list[Any]]:
    """{output name: data} of a V2 inference response; UpstreamError when it is not one."""
    try:
        outputs = body["outputs"]
        return {str(o["name"]): list(o["data"]) for o in outputs}
    except (KeyError, TypeError) as err:
        raise UpstreamError(
            model, "bad_response", f"not a V2 inference response ({err!r})"
        ) from err


class V2Transport(Protocol):
    """How bytes reach a model server: HTTP/1.1 in production, an in-process double in tests."""

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class V2Client:
    """One model server (all its versions), every call within its own time budget."""

    def __init__(
        self,
        base_url: str,
        transport: V2Transport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport: V2Transport = transport or Http1Transport(
            self.base_url, max_response_bytes=max_response_bytes
        )

    async def _call(
        self, model: str, method: str, path: str, timeout_s: float, body: Any = None
    ) -> Any:
        payload = None if body is None else orjson.dumps(body)
        try:
            async with asyncio.timeout(timeout_s):
                status, content = await self.transport.request(method, path, payload)
        except TimeoutError as err:
            raise UpstreamError(
                model, "timeout", f"no answer within {timeout_s * 1000:.0f} ms"
            ) from err
        except OSError as err:  # refused, reset, closed: ConnectionError is one
            raise UpstreamError(model, "unavailable", f"{type(err).__name__}: {err}") from err
        except ResponseTooLarge as err:
            detail = f"{err} (router.max_upstream_response_bytes)"
            raise UpstreamError(model, "bad_response", detail) from err
        if status >= 400:
            text = content[:200].decode(errors="replace")
            raise UpstreamError(model, "bad_status", f"HTTP {status}: {text}")
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as err:
            raise UpstreamError(model, "bad_response", "the body is not JSON") from err

    async def infer(
        self,
        model: str,
        columns: Mapping[str, Sequence[Any]],
        timeout_s: float,
        request_id: str | None = None,
    ) -> dict[str, list[Any]]:
        """POST /v2/models/{model}/infer; {output name: data}."""
        body = await self._call(
            model, "POST", f"/v2/models/{model}/infer", timeout_s, v2_request(columns, request_id)
        )
        return v2_outputs(body, model)

    async def model_ready(self, model: str, timeout_s: float) -> bool:
        """Whether the server has `model` loaded and ready (False for unknown or unreachable)."""
        try:
            body = await self._call(model, "GET", f"/v2/models/{model}/ready", timeout_s)
        except UpstreamError:
            return False
        # KServe answers {"name": ..., "ready": true}; a bare 200 means ready too.
        return bool(body.get("ready", True)) if isinstance(body, dict) else True

    async def load(self, model: str, timeout_s: float) -> None:
        """POST /v2/repository/models/{model}/load (the server fetches it from the registry)."""
        await self._call(model, "POST", f"/v2/repository/models/{model}/load", timeout_s)

    async def list_models(self, timeout_s: float) -> list[str]:
        """GET /v2/models: the names the server hosts (KServe's model repository listing)."""
        body = await self._call("*", "GET", "/v2/models", timeout_s)
        models = body.get("models", []) if isinstance(body, dict) else []
        return [m if isinstance(m, str) else str(m.get("name")) for m in models]

    async def close(self) -> None:
        await self.transport.close()
