"""What the SQL backends share: the statements, in either dialect (`placeholder(n)` writes the
n-th parameter), and the codec between a record and a table row (JSON columns as text)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import orjson

from serving.prediction_log.records import Feedback, JoinResult, LoggedPrediction, PredictionRecord

RECORD_FIELDS = [f.name for f in fields(PredictionRecord)]
JSON_FIELDS = {"inputs", "features", "output"}


def window_query(
    placeholder: Callable[[int], str],
    product: str,
    arm: str,
    since: float,
    until: float,
    role: str | None,
) -> tuple[str, list[Any]]:
    """One arm's predictions in [since, until) with their labels, for either SQL dialect
    (`placeholder(n)` writes the n-th parameter: `?` for SQLite, `$n` for PostgreSQL)."""
    columns = ", ".join(f"p.{c}" for c in RECORD_FIELDS)
    args: list[Any] = [product, arm, since, until]
    query = (
        f"SELECT {columns}, l.item_id, l.label FROM predictions p "
        "LEFT JOIN labels l ON l.request_id = p.request_id "
        f"WHERE p.product = {placeholder(1)} AND p.arm = {placeholder(2)} "
        f"AND p.at >= {placeholder(3)} AND p.at < {placeholder(4)}"
    )
    if role is not None:
        args.append(role)
        query += f" AND p.role = {placeholder(5)}"
    return query + " ORDER BY p.at, p.request_id, p.role", args


def label_statements(placeholder: Callable[[int], str]) -> tuple[str, str]:
    """(which product logged a request id, upsert of its label), for either SQL dialect."""
    values = ", ".join(placeholder(n) for n in range(1, 6))
    return (
        f"SELECT product FROM predictions WHERE request_id = {placeholder(1)} LIMIT 1",
        f"INSERT INTO labels (request_id, item_id, label, event, at) VALUES ({values}) "
        "ON CONFLICT (request_id, item_id) DO UPDATE SET "
        "label = excluded.label, event = excluded.event, at = excluded.at",
    )


def label_refused(logged_product: str | None, feedback: Feedback) -> JoinResult | None:
    """Why a label cannot join (the request is unknown, or of another product), or None."""
    if logged_product is None:
        return "unknown_request"
    return "wrong_product" if logged_product != feedback.product else None


def label_values(feedback: Feedback) -> tuple[Any, ...]:
    return (
        feedback.request_id,
        feedback.item_id or "",
        feedback.label,
        feedback.event,
        feedback.at,
    )


def count_query(placeholder: Callable[[int], str], product: str | None) -> tuple[str, list[Any]]:
    if product is None:
        return "SELECT count(*) FROM predictions", []
    return f"SELECT count(*) FROM predictions WHERE product = {placeholder(1)}", [product]


_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def row_values(record: PredictionRecord) -> tuple[Any, ...]:
    values = []
    for name in RECORD_FIELDS:
        value = getattr(record, name)
        if name in JSON_FIELDS:
            # orjson: the writer thread holds the GIL while it encodes, and the event loop
            # waits for it; json.dumps of a batch's features was most of that time. (NaN is
            # written as null: JSON has no NaN, and PostgreSQL's jsonb refuses one.)
            value = None if value is None else orjson.dumps(value, option=_ORJSON).decode()
        values.append(value)
    return tuple(values)


def labelled(row: dict[str, Any], labels: list[tuple[str, int | None]]) -> LoggedPrediction:
    """A row with its label: fraud takes the label as given; recs scores a hit when any item the
    listener engaged with was among the row's own items (served and shadow differ)."""
    for name in JSON_FIELDS:
        if isinstance(row[name], str):
            row[name] = orjson.loads(row[name])
    row["degraded"] = bool(row["degraded"])
    label: int | None = None
    hits: int | None = None
    if labels and row["product"] == "fraud":
        label = next((int(v) for item, v in labels if item == "" and v is not None), None)
    elif labels:
        shown = {i.get("item_id") for i in (row["output"] or {}).get("items", [])}
        hits = len(shown & {item for item, _ in labels if item})
        label = int(hits > 0)
    return LoggedPrediction(**row, label=label, hits=hits)


def group_window_rows(raw: Sequence[Sequence[Any]]) -> list[LoggedPrediction]:
    # The query is a left join on labels: one line per (prediction, label), in prediction order.
    out: list[LoggedPrediction] = []
    current: dict[str, Any] | None = None
    labels: list[tuple[str, int | None]] = []
    n = len(RECORD_FIELDS)
    for line in raw:
        key = (line[0], line[1])
        if current is None or key != (current["request_id"], current["role"]):
            if current is not None:
                out.append(labelled(current, labels))
            current, labels = dict(zip(RECORD_FIELDS, line[:n], strict=True)), []
        if line[n] is not None:
            labels.append((line[n], line[n + 1]))
    if current is not None:
        out.append(labelled(current, labels))
    return out
