"""The V2 codec of the model servers' contract (docs/inference-contract.md): each product's
inputs and outputs, V1 instances and V2 tensors decoded into rows (a RequestError naming the
input at fault), and the scalars an answer is encoded with."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

DEFAULT_K, MAX_K = 10, 100


class RequestError(ValueError):
    """A request the model cannot answer as sent (a 4xx); `fields` names the inputs at fault."""

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


@dataclass(frozen=True)
class InputSpec:
    """One input of the contract (docs/inference-contract.md): a 1-D tensor of the batch."""

    name: str
    datatype: Literal["BYTES", "FP64", "INT64"]
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class OutputSpec:
    name: str
    datatype: Literal["BYTES", "FP64", "INT64"]


FRAUD_INPUTS = (
    InputSpec("card_id", "BYTES"),
    InputSpec("merchant_id", "BYTES"),
    InputSpec("amount", "FP64"),
    InputSpec("country", "BYTES"),
    InputSpec("device_id", "BYTES"),
    # Absent: the server's clock. The router sends the transaction's own time.
    InputSpec("event_timestamp", "FP64", required=False),
)
FRAUD_OUTPUTS = (
    OutputSpec("score", "FP64"),
    OutputSpec("decision", "BYTES"),
    OutputSpec("reasons", "BYTES"),
    OutputSpec("model_version", "BYTES"),
    OutputSpec("card_unknown", "INT64"),
    # The model's inputs as it scored them (a JSON object per row): the router logs them, and
    # monitoring judges input drift on exactly what the model saw.
    OutputSpec("features", "BYTES"),
)
RECSYS_INPUTS = (
    InputSpec("user_id", "BYTES"),
    InputSpec("k", "INT64", required=False, default=DEFAULT_K),
    InputSpec("event_timestamp", "FP64", required=False),
    InputSpec("genre_hint", "BYTES", required=False),
)
RECSYS_OUTPUTS = (
    OutputSpec("item_ids", "BYTES"),
    OutputSpec("scores", "BYTES"),
    OutputSpec("path", "BYTES"),
    OutputSpec("model_version", "BYTES"),
)
_NUMERIC_V2 = {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32"}
_NUMERIC_V2 |= {"UINT16", "UINT8"}


def tensor_metadata(specs: Sequence[InputSpec | OutputSpec]) -> list[dict[str, Any]]:
    """V2 model-metadata tensors: every input and output is 1-D over the batch (`[-1]`)."""
    return [{"name": s.name, "datatype": s.datatype, "shape": [-1]} for s in specs]


def _convert(spec: InputSpec, value: Any, row: int) -> Any:
    """One value of an input in its contract type, or a RequestError naming the input."""
    if value is None:
        if spec.required:
            raise RequestError(f"input {spec.name!r} is null in row {row}", [spec.name])
        return spec.default
    if spec.datatype == "BYTES":
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, str):
            return value
        raise RequestError(
            f"input {spec.name!r} must be a string (BYTES), got {value!r} in row {row}",
            [spec.name],
        )
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise RequestError(
            f"input {spec.name!r} must be a number ({spec.datatype}), got {value!r} in row {row}",
            [spec.name],
        )
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(f"input {spec.name!r} must be finite, got {value!r}", [spec.name])
    if spec.datatype == "INT64":
        if number != int(number):
            raise RequestError(
                f"input {spec.name!r} must be an integer, got {value!r} in row {row}", [spec.name]
            )
        return int(number)
    return number


def rows_from_v1(body: Any, specs: Sequence[InputSpec]) -> list[dict[str, Any]]:
    """Rows from a V1 body ``{"instances": [{input: value, ...}, ...]}``."""
    if isinstance(body, bytes | str):
        # KServe passes the body on undecoded when the client did not say it is JSON.
        try:
            body = json.loads(body)
        except ValueError as err:
            raise RequestError(
                f'the body is not JSON ({err}); a V1 request is {{"instances": [...]}}',
                ["instances"],
            ) from err
    instances = body.get("instances") if isinstance(body, Mapping) else None
    if not isinstance(instances, list) or not instances:
        raise RequestError(
            'a V1 request is {"instances": [{...}, ...]} with at least one instance',
            ["instances"],
        )
    rows = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, Mapping):
            raise RequestError(f"instances[{i}] must be an object of named inputs", ["instances"])
        missing = [s.name for s in specs if s.required and instance.get(s.name) is None]
        if missing:
            raise RequestError(f"instances[{i}] lacks input(s) {', '.join(missing)}", missing)
        rows.append({s.name: _convert(s, instance.get(s.name), i) for s in specs})
    return rows


def rows_from_v2(inputs: Sequence[Any], specs: Sequence[InputSpec]) -> list[dict[str, Any]]:
    """Rows from V2 input tensors (objects with name, datatype, shape, data: KServe's InferInput).

    Every input is a 1-D tensor of the batch; numbers may come in any numeric datatype.
    """
    by_name = {getattr(t, "name", None): t for t in inputs}
    missing = [s.name for s in specs if s.required and s.name not in by_name]
    if missing:
        raise RequestError(f"the request lacks input(s) {', '.join(missing)}", missing)
    columns: dict[str, list[Any]] = {}
    for spec in specs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            continue
        datatype = str(tensor.datatype).upper()
        if spec.datatype == "BYTES" and datatype != "BYTES":
            raise RequestError(f"input {spec.name!r} must be BYTES, not {datatype}", [spec.name])
        if spec.datatype != "BYTES" and datatype not in _NUMERIC_V2:
            raise RequestError(
                f"input {spec.name!r} must be {spec.datatype}, not {datatype}", [spec.name]
            )
        columns[spec.name] = _tensor_values(tensor, spec.name)
    sizes = {len(values) for values in columns.values()}
    if len(sizes) != 1 or 0 in sizes:
        shapes = ", ".join(f"{name}: {len(v)}" for name, v in columns.items())
        raise RequestError(
            f"every input must be a 1-D tensor of the same non-zero length ({shapes})",
            list(columns),
        )
    n = sizes.pop()
    rows = []
    for i in range(n):
        rows.append(
            {
                s.name: _convert(s, columns[s.name][i], i) if s.name in columns else s.default
                for s in specs
            }
        )
    return rows


def _tensor_values(tensor: Any, name: str) -> list[Any]:
    shape = list(tensor.shape or [])
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(f"input {name!r} must have shape [n], got {shape}", [name])
    data = tensor.data
    if not isinstance(data, list):
        # gRPC raw contents or binary REST data: KServe decodes those itself.
        data = tensor.as_numpy().reshape(-1).tolist()
    flat = [v for item in data for v in item] if data and isinstance(data[0], list) else data
    expected = shape[0] if shape else len(flat)
    if len(flat) != expected:
        raise RequestError(f"input {name!r} has {len(flat)} values but shape {shape}", [name])
    return list(flat)


def json_scalar(value: Any) -> Any:
    """A JSON-ready scalar (numpy types and NaN do not survive JSON)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
