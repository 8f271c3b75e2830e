"""The contract as data agrees with docs/data-contract.md, and failures read well (no GX run here)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.contracts import (
    CATEGORIES,
    CONTRACTS,
    COUNTRIES,
    GENRES,
    PANDAS_DTYPES,
    ColumnContract,
    batch_day_parameters,
    contract_for,
    describe_failure,
    json_safe,
)

CONTRACT_DOC = Path(__file__).resolve().parents[2] / "docs" / "data-contract.md"
DOC_TYPES = {
    "int64": "int64",
    "float64": "float64",
    "string": "string",
    "timestamp UTC": "timestamp",
}


def documented_columns() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(world, event type) -> [(column, logical type)] as the contract page's tables list them."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    world = event_type = ""
    for line in CONTRACT_DOC.read_text().splitlines():
        if line.startswith("## "):
            world = line[3:].strip()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4 or cells[1] in ("column", "---"):
            continue
        event_type = cells[0] or event_type
        for column in cells[1].split(","):
            found.setdefault((world, event_type), []).append((column.strip(), DOC_TYPES[cells[2]]))
    return found


def documented_list(name: str) -> tuple[str, ...]:
    match = re.search(rf"^{name}: (.+)$", CONTRACT_DOC.read_text(), flags=re.MULTILINE)
    assert match, f"{name} is not listed in {CONTRACT_DOC.name}"
    return tuple(v.strip() for v in match.group(1).split(","))


def test_every_documented_event_type_has_a_contract_with_the_documented_columns() -> None:
    documented = documented_columns()
    assert documented, "the contract page's tables could not be parsed"
    in_code = {
        (world, event_type): [(c.name, c.logical_type) for c in contract.columns]
        for world, contracts in CONTRACTS.items()
        for event_type, contract in contracts.items()
    }
    assert in_code == documented


@pytest.mark.parametrize(
    ("name", "values"), [("CATEGORIES", CATEGORIES), ("COUNTRIES", COUNTRIES), ("GENRES", GENRES)]
)
def test_allowed_sets_match_the_contract_page(name: str, values: tuple[str, ...]) -> None:
    assert values == documented_list(name)


@pytest.mark.parametrize(
    ("world", "event_type", "column", "example"),
    [
        ("fraud", "cards", "card_id", "card_000123"),
        ("fraud", "merchants", "merchant_id", "m_00042"),
        ("recsys", "users", "user_id", "u_000001"),
        ("recsys", "items", "item_id", "i_000001"),
    ],
)
def test_id_patterns_accept_the_documented_examples(
    world: str, event_type: str, column: str, example: str
) -> None:
    contract = contract_for(world, event_type)
    assert contract is not None
    pattern = contract.column(column).pattern
    assert pattern is not None
    assert re.match(pattern, example)
    assert not re.match(pattern, example.replace("_", "-"))
    assert not re.match(pattern, f"{example} ")


def test_row_ids_and_entity_keys_are_unique() -> None:
    keys = {
        (world, event_type): [c.name for c in contract.columns if c.unique]
        for world, contracts in CONTRACTS.items()
        for event_type, contract in contracts.items()
    }
    assert keys == {
        ("fraud", "transactions"): ["transaction_id"],
        ("fraud", "chargebacks"): ["transaction_id"],
        ("fraud", "cards"): ["card_id"],
        ("fraud", "merchants"): ["merchant_id"],
        ("recsys", "interactions"): ["interaction_id"],
        ("recsys", "users"): ["user_id"],
        ("recsys", "items"): ["item_id"],
    }


def test_day_bound_and_ordering_rules_sit_on_the_documented_columns() -> None:
    transactions = CONTRACTS["fraud"]["transactions"]
    assert transactions.inside_batch_day == ("event_timestamp",)
    assert [(b.column, b.min_value, b.max_value) for b in transactions.median_bounds] == [
        ("amount", 5, 500)
    ]
    assert CONTRACTS["recsys"]["interactions"].inside_batch_day == ("event_timestamp",)
    pairs = CONTRACTS["fraud"]["chargebacks"].ordered_pairs
    assert [(p.later, p.earlier) for p in pairs] == [("reported_at", "transaction_timestamp")]


def test_range_words_say_open_and_closed_ends() -> None:
    assert ColumnContract(
        "amount", "float64", min_value=0, strict_min=True, max_value=50_000
    ).range_words == ("> 0 and <= 50000")
    assert (
        ColumnContract("position", "int64", min_value=0, max_value=49).range_words
        == ">= 0 and <= 49"
    )


def test_arrow_schema_and_empty_frame_follow_the_logical_types() -> None:
    contract = CONTRACTS["fraud"]["chargebacks"]
    schema = contract.arrow_schema()
    assert schema.field("transaction_id").type == pa.int64()
    assert schema.field("reported_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("reason").type == pa.string()
    empty = contract.empty_frame()
    assert list(empty.columns) == contract.column_names
    assert len(empty) == 0
    for column in contract.columns:
        expected = (
            "object" if column.logical_type == "string" else PANDAS_DTYPES[column.logical_type]
        )
        assert str(empty[column.name].dtype) == expected


def test_batch_day_parameters_span_one_utc_day() -> None:
    params = batch_day_parameters(dt.date(2026, 1, 3))
    assert params["batch_day_start"] == dt.datetime(2026, 1, 3, tzinfo=dt.UTC)
    assert params["batch_day_end"] - params["batch_day_start"] == dt.timedelta(days=1)


def gx_result(
    expectation_type: str,
    kwargs: dict[str, object],
    result: dict[str, object] | None = None,
    exception: str | None = None,
    rule: str = "the rule",
) -> dict[str, object]:
    """The shape of `ExpectationValidationResult.to_json_dict()` in GX 1.x."""
    return {
        "success": False,
        "expectation_config": {"type": expectation_type, "kwargs": kwargs, "meta": {"rule": rule}},
        "result": result or {},
        "exception_info": {
            "raised_exception": exception is not None,
            "exception_message": exception,
        },
    }


def test_a_missing_column_is_named_as_the_reason_not_the_gx_exception() -> None:
    failure = describe_failure(
        gx_result(
            "expect_column_values_to_not_be_null",
            {"column": "card_id"},
            exception="list index out of range",
            rule="card_id must not be null",
        ),
        batch_columns=["amount"],
    )
    assert failure.column == "card_id"
    assert failure.reason == "card_id must not be null; column 'card_id' is not in the batch"


def test_other_exceptions_say_the_rule_could_not_be_evaluated() -> None:
    failure = describe_failure(
        gx_result(
            "expect_column_median_to_be_between",
            {"column": "amount"},
            exception="unsupported operand\nTraceback...",
        ),
        batch_columns=["amount"],
    )
    assert failure.reason == "the rule; could not be evaluated: unsupported operand"


def test_column_set_mismatch_lists_missing_and_unexpected_columns() -> None:
    failure = describe_failure(
        gx_result(
            "expect_table_columns_to_match_set",
            {"column_set": ["a", "b"]},
            {
                "observed_value": ["a", "c"],
                "details": {"mismatched": {"missing": ["b"], "unexpected": ["c"]}},
            },
        ),
        batch_columns=["a", "c"],
    )
    assert failure.column is None
    assert failure.reason == "the rule; missing: b; unexpected: c"


def test_row_level_failures_give_counts_and_a_few_examples() -> None:
    failure = describe_failure(
        gx_result(
            "expect_column_values_to_be_in_set",
            {"column": "channel"},
            {"element_count": 100, "unexpected_count": 7, "partial_unexpected_list": ["atm"] * 20},
        ),
        batch_columns=["channel"],
    )
    assert failure.unexpected_count == 7
    assert failure.examples == ["atm"] * 5
    assert failure.reason.startswith("the rule; 7 of 100 rows break it, e.g. 'atm'")


def test_aggregate_failures_give_the_observed_value() -> None:
    failure = describe_failure(
        gx_result(
            "expect_column_median_to_be_between",
            {"column": "amount"},
            {"observed_value": np.float64(9100.0)},
        ),
        batch_columns=["amount"],
    )
    assert failure.observed_value == 9100.0
    assert failure.reason == "the rule; observed 9100.0"
    assert json.loads(json.dumps(failure.to_dict()))["observed_value"] == 9100.0


def test_json_safe_turns_numpy_and_time_values_into_json() -> None:
    value = {
        "n": np.int64(3),
        "pair": (np.datetime64("2026-01-01T00:00:00"), pd.Timestamp("2026-01-02", tz="UTC")),
        "nan": float("nan"),
        "nat": np.datetime64("NaT"),
        "other": object,
    }
    safe = json_safe(value)
    json.dumps(safe)
    assert safe["n"] == 3
    assert safe["pair"] == ["2026-01-01T00:00:00", "2026-01-02T00:00:00+00:00"]
    assert safe["nan"] is None
    assert safe["nat"] is None
