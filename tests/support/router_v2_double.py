"""A TEST DOUBLE of a KServe model server, for tests of the router's own behaviour only.

It speaks the V2 JSON of docs/inference-contract.md (infer, ready, model listing, repository
load) with trivial deterministic "models", and can be told to be slow or to fail per model, or
to hold a model's answers until released (`POST /_double/config`), and asked what it served
(`GET /_double/stats`). Tests of model behaviour use the real servers
(`python -m serving.model_server`).

Run: python tests/support/router_v2_double.py --product fraud --models fraud-v1,fraud-v2
--port P
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DoubleState:
    product: str
    models: set[str]
    delay_ms: dict[str, float] = field(default_factory=dict)
    fail_status: dict[str, int] = field(default_factory=dict)
    infers: Counter[str] = field(default_factory=Counter)  # calls
    rows: Counter[str] = field(default_factory=Counter)  # rows over all calls
    loads: list[str] = field(default_factory=list)
    # Infer calls to a held model wait for `released` before they are answered and counted:
    # a test decides when such a model answers, no clock does.
    held: set[str] = field(default_factory=set)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def hold(self, models: set[str]) -> None:
        """Hold `models` until `release` (call on the event loop that serves the double)."""
        if self.released.is_set():
            self.released = asyncio.Event()
        self.held = set(models)

    def release(self) -> None:
        """Answer every held call now, and hold nothing from now on."""
        self.held = set()
        self.released.set()


def _version(model: str) -> int:
    return int(model.rsplit("-v", 1)[1])


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def fraud_outputs(model: str, columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """score: a hash of (card, version) nudged by the amount, so versions differ and are stable."""
    version = _version(model)
    scores, decisions, unknown = [], [], []
    for card, amount in zip(columns["card_id"], columns["amount"], strict=True):
        score = min(1.0, 0.5 * _unit(f"{card}/{version}") + float(amount) / 20_000)
        scores.append(score)
        decisions.append("block" if score >= 0.5 else "allow")
        unknown.append(int(str(card).startswith("unknown")))
    n = len(scores)
    name = model.rsplit("-v", 1)[0]
    return [
        {"name": "score", "shape": [n], "datatype": "FP64", "data": scores},
        {"name": "decision", "shape": [n], "datatype": "BYTES", "data": decisions},
        {"name": "reasons", "shape": [n], "datatype": "BYTES", "data": [""] * n},
        {
            "name": "model_version",
            "shape": [n],
            "datatype": "BYTES",
            "data": [f"{name}/{version}"] * n,
        },
        {"name": "card_unknown", "shape": [n], "datatype": "INT64", "data": unknown},
    ]


def recs_outputs(model: str, columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    version = _version(model)
    name = model.rsplit("-v", 1)[0]
    ids, scores, paths = [], [], []
    for user, k in zip(columns["user_id"], columns["k"], strict=True):
        cold = str(user).startswith(("__", "new_"))
        if cold:
            items = [f"pop_{i}" for i in range(int(k))]
            values = [0.0] * int(k)
        else:
            items = [
                f"v{version}_item_{int(_unit(f'{user}/{i}') * 1000)}_{i}" for i in range(int(k))
            ]
            values = [round(1.0 - i / (int(k) + 1), 4) for i in range(int(k))]
        ids.append(",".join(items))
        scores.append(",".join(str(v) for v in values))
        paths.append("popularity" if cold else "model")
    n = len(ids)
    return [
        {"name": "item_ids", "shape": [n], "datatype": "BYTES", "data": ids},
        {"name": "scores", "shape": [n], "datatype": "BYTES", "data": scores},
        {"name": "path", "shape": [n], "datatype": "BYTES", "data": paths},
        {
            "name": "model_version",
            "shape": [n],
            "datatype": "BYTES",
            "data": [f"{name}/{version}"] * n,
        },
    ]


async def answer(state: DoubleState, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """The double's answer to one request: (status, JSON body)."""
    parts = [p for p in path.split("/") if p]
    if path == "/v2/health/ready" or path == "/v2/health/live":
        return 200, {"ready": True, "live": True}
    if path == "/v2/models" and method == "GET":
        return 200, {"models": sorted(state.models)}
    if path == "/_double/stats":
        return 200, {
            "infers": dict(state.infers),
            "rows": dict(state.rows),
            "loads": state.loads,
            "models": sorted(state.models),
        }
    if path == "/_double/config" and method == "POST":
        # Each key given replaces that setting; a key left out leaves it as it was.
        config = json.loads(body)
        if "delay_ms" in config:
            state.delay_ms = {k: float(v) for k, v in config["delay_ms"].items()}
        if "fail_status" in config:
            state.fail_status = {k: int(v) for k, v in config["fail_status"].items()}
        if "hold" in config:
            state.hold(set(config["hold"]))
        if config.get("release"):
            state.release()
        return 200, {"ok": True}
    if len(parts) == 5 and parts[:3] == ["v2", "repository", "models"] and parts[4] == "load":
        state.models.add(parts[3])
        state.loads.append(parts[3])
        return 200, {"name": parts[3], "load": True}
    if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "ready":
        if parts[2] in state.models:
            return 200, {"name": parts[2], "ready": True}
        return 503, {"error": f"Model with name {parts[2]} is not ready."}
    if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "infer":
        model = parts[2]
        if model not in state.models:
            return 404, {"error": f"Model with name {model} does not exist."}
        if model in state.held:
            await state.released.wait()
        if model in state.delay_ms:
            await asyncio.sleep(state.delay_ms[model] / 1000)
        if model in state.fail_status:
            return state.fail_status[model], {"error": "told to fail"}
        state.infers[model] += 1
        request = json.loads(body)
        columns = {i["name"]: i["data"] for i in request["inputs"]}
        state.rows[model] += len(request["inputs"][0]["data"])
        make = fraud_outputs if state.product == "fraud" else recs_outputs
        return 200, {
            "model_name": model,
            "id": request.get("id") or "",
            "outputs": make(model, columns),
        }
    return 404, {"error": f"no route {method} {path}"}


def asgi_app(state: DoubleState) -> Any:
    """The double as a bare ASGI app (no framework: it must be cheap next to the router)."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload = await answer(state, scope["method"], scope["path"], body)
        data = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--product", choices=["fraud", "recsys"], required=True)
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    state = DoubleState(args.product, set(args.models.split(",")))
    uvicorn.run(asgi_app(state), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
