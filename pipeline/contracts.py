"""The platform's contract for each raw event type, as data, and the GX gate built from it.

The contract mirrors docs/data-contract.md; a unit test parses that page and checks that the two
agree, so the page and the gate cannot drift apart. Great Expectations is imported only inside
the functions that need it: importing it costs several seconds, and most commands never do.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from features.catalog import GENRES as CATALOG_GENRES
from mlsd.settings import World
from mlsd.telemetry import quiet_gx_context, quiet_libraries

if TYPE_CHECKING:
    import great_expectations as gx

LogicalType = Literal["int64", "float64", "string", "timestamp"]

# The platform's one list of genres: the gate accepts these and the feature views follow them.
GENRES = CATALOG_GENRES

CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurants",
    "fuel",
    "travel",
    "electronics",
    "online_retail",
    "gaming",
    "gift_cards",
    "pharmacy",
    "apparel",
)
COUNTRIES: tuple[str, ...] = (
    "US",
    "GB",
    "DE",
    "FR",
    "ES",
    "IT",
    "NL",
    "CA",
    "BR",
    "MX",
    "IN",
    "JP",
    "NG",
    "RU",
    "CN",
    "AU",
)

# Ids are zero-padded to at least the width the contract shows; wider is allowed so that a
# bigger world does not break the gate.
CARD_ID_PATTERN = r"^card_\d{6,}$"
MERCHANT_ID_PATTERN = r"^m_\d{5,}$"
USER_ID_PATTERN = r"^u_\d{6,}$"
ITEM_ID_PATTERN = r"^i_\d{6,}$"

# pandas dtype each logical type must arrive as once the parquet file is read.
PANDAS_DTYPES: dict[LogicalType, str] = {
    "int64": "int64",
    "float64": "float64",
    "string": "str",
    "timestamp": "datetime64[us, UTC]",
}
ARROW_TYPES: dict[LogicalType, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

# Names of the suite parameters that carry the batch's day into a suite built once per type.
DAY_START_PARAMETER = "batch_day_start"
DAY_END_PARAMETER = "batch_day_end"

# Checks that run before GX can: the file must be readable parquet of a known type and day.
UNREADABLE_FILE = "file_is_readable_parquet"
UNKNOWN_EVENT_TYPE = "event_type_has_contract"
BAD_BATCH_NAME = "batch_name_is_a_date"

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ColumnContract:
    """One column: its logical type and the rules every value must obey."""

    name: str
    logical_type: LogicalType
    nullable: bool = False
    min_value: float | None = None
    max_value: float | None = None
    strict_min: bool = False
    strict_max: bool = False
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    unique: bool = False

    @property
    def range_words(self) -> str:
        """The range rule as a reader would write it, e.g. '> 0 and <= 50000'."""
        parts = []
        if self.min_value is not None:
            parts.append(f"{'>' if self.strict_min else '>='} {self.min_value:g}")
        if self.max_value is not None:
            parts.append(f"{'<' if self.strict_max else '<='} {self.max_value:g}")
        return " and ".join(parts)


@dataclass(frozen=True)
class MedianBounds:
    """Bounds on a column's batch median: catches a change of unit that keeps every row in range."""

    column: str
    min_value: float
    max_value: float
    why: str


@dataclass(frozen=True)
class OrderedPair:
    """In every row, `later` must be strictly after `earlier`."""

    later: str
    earlier: str


@dataclass(frozen=True)
class EventContract:
    """Everything the gate demands of one event type's daily batch."""

    world: World
    event_type: str
    columns: tuple[ColumnContract, ...]
    inside_batch_day: tuple[str, ...] = ()
    median_bounds: tuple[MedianBounds, ...] = ()
    ordered_pairs: tuple[OrderedPair, ...] = ()

    @property
    def name(self) -> str:
        """`<world>/<event_type>`, the prefix of every batch id of this type."""
        return f"{self.world}/{self.event_type}"

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def column(self, name: str) -> ColumnContract:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The schema the offline store writes, so that every partition reads back alike."""
        return pa.schema(
            [
                pa.field(c.name, ARROW_TYPES[c.logical_type], nullable=c.nullable)
                for c in self.columns
            ]
        )

    def empty_frame(self) -> pd.DataFrame:
        """A frame with no rows and the contract's columns and dtypes."""
        return self.arrow_schema().empty_table().to_pandas()


def _id_column(name: str, pattern: str | None = None) -> ColumnContract:
    return ColumnContract(name, "string", pattern=pattern)


def _timestamp_column(name: str) -> ColumnContract:
    return ColumnContract(name, "timestamp")


def _category_column(name: str, allowed: Sequence[str]) -> ColumnContract:
    return ColumnContract(name, "string", allowed=tuple(allowed))


# Every column is non-null: the contract has no optional field, and a null that slips in
# would surface far downstream as a NaN feature.
_CONTRACT_LIST: tuple[EventContract, ...] = (
    EventContract(
        world="fraud",
        event_type="transactions",
        columns=(
            ColumnContract("transaction_id", "int64", min_value=0, strict_min=True, unique=True),
            _timestamp_column("event_timestamp"),
            _id_column("card_id", CARD_ID_PATTERN),
            _id_column("merchant_id", MERCHANT_ID_PATTERN),
            _category_column("merchant_category", CATEGORIES),
            ColumnContract("amount", "float64", min_value=0, strict_min=True, max_value=50_000),
            _category_column("country", COUNTRIES),
            _id_column("device_id"),
            _category_column("channel", ("pos", "online")),
        ),
        inside_batch_day=("event_timestamp",),
        median_bounds=(
            MedianBounds("amount", 5, 500, "amounts are USD; a median far above says cents"),
        ),
    ),
    EventContract(
        world="fraud",
        event_type="chargebacks",
        columns=(
            ColumnContract("transaction_id", "int64", unique=True),
            _id_column("card_id", CARD_ID_PATTERN),
            _id_column("merchant_id", MERCHANT_ID_PATTERN),
            ColumnContract("amount", "float64", min_value=0, strict_min=True),
            _timestamp_column("transaction_timestamp"),
            _timestamp_column("reported_at"),
            _category_column("reason", ("fraud",)),
        ),
        # Day D's chargeback batch holds the chargebacks of day D's transactions.
        inside_batch_day=("transaction_timestamp",),
        ordered_pairs=(OrderedPair(later="reported_at", earlier="transaction_timestamp"),),
    ),
    EventContract(
        world="fraud",
        event_type="cards",
        columns=(
            ColumnContract("card_id", "string", pattern=CARD_ID_PATTERN, unique=True),
            _category_column("home_country", COUNTRIES),
            _timestamp_column("issued_at"),
        ),
    ),
    EventContract(
        world="fraud",
        event_type="merchants",
        columns=(
            ColumnContract("merchant_id", "string", pattern=MERCHANT_ID_PATTERN, unique=True),
            _category_column("merchant_category", CATEGORIES),
            _category_column("country", COUNTRIES),
            _timestamp_column("onboarded_at"),
        ),
    ),
    EventContract(
        world="recsys",
        event_type="interactions",
        columns=(
            ColumnContract("interaction_id", "int64", min_value=0, strict_min=True, unique=True),
            _timestamp_column("event_timestamp"),
            ColumnContract("session_id", "int64"),
            _id_column("user_id", USER_ID_PATTERN),
            _id_column("item_id", ITEM_ID_PATTERN),
            ColumnContract("position", "int64", min_value=0, max_value=49),
            _category_column("event", ("play", "skip")),
            ColumnContract("dwell_seconds", "float64", min_value=0, max_value=3600),
        ),
        inside_batch_day=("event_timestamp",),
    ),
    EventContract(
        world="recsys",
        event_type="users",
        columns=(
            ColumnContract("user_id", "string", pattern=USER_ID_PATTERN, unique=True),
            _category_column("country", COUNTRIES),
            _timestamp_column("signup_at"),
        ),
    ),
    EventContract(
        world="recsys",
        event_type="items",
        columns=(
            ColumnContract("item_id", "string", pattern=ITEM_ID_PATTERN, unique=True),
            _category_column("genre", GENRES),
            _timestamp_column("released_at"),
            ColumnContract("duration_seconds", "float64", min_value=30, max_value=1200),
        ),
    ),
)

CONTRACTS: dict[str, dict[str, EventContract]] = {}
for _contract in _CONTRACT_LIST:
    CONTRACTS.setdefault(_contract.world, {})[_contract.event_type] = _contract


def contract_for(world: str, event_type: str) -> EventContract | None:
    """The contract of one event type, or None when the platform has none for it."""
    return CONTRACTS.get(world, {}).get(event_type)


def batch_day_parameters(day: dt.date) -> dict[str, dt.datetime]:
    """Suite parameters that pin the 'inside the batch's day' expectations to `day` (UTC)."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return {DAY_START_PARAMETER: start, DAY_END_PARAMETER: start + dt.timedelta(days=1)}


# ----------------------------------------------------------------------------- GX suite


def build_expectation_suite(contract: EventContract) -> gx.ExpectationSuite:
    """The contract as a GX ExpectationSuite; each expectation carries its rule in words in `meta`.

    Suites that check the batch's day take the day as suite parameters (see
    `batch_day_parameters`), so one suite per event type serves every batch.
    """
    # GX reads its analytics switch at import; callers outside the CLI may not have set it.
    quiet_libraries()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=contract.column_names,
            exact_match=True,
            meta={"rule": "columns must match the contract exactly"},
        ),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1, meta={"rule": "the batch must not be empty"}
        ),
    ]
    for column in contract.columns:
        expectations += _column_expectations(column)
    for column_name in contract.inside_batch_day:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column_name,
                min_value={"$PARAMETER": DAY_START_PARAMETER},
                max_value={"$PARAMETER": DAY_END_PARAMETER},
                strict_max=True,
                meta={"rule": f"{column_name} must fall inside the batch's day (UTC)"},
            )
        )
    for bounds in contract.median_bounds:
        expectations.append(
            gxe.ExpectColumnMedianToBeBetween(
                column=bounds.column,
                min_value=bounds.min_value,
                max_value=bounds.max_value,
                meta={
                    "rule": f"median {bounds.column} must be within "
                    f"{bounds.min_value:g}..{bounds.max_value:g} ({bounds.why})"
                },
            )
        )
    for pair in contract.ordered_pairs:
        expectations.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=pair.later,
                column_B=pair.earlier,
                or_equal=False,
                meta={"rule": f"{pair.later} must be after {pair.earlier}"},
            )
        )
    return gx.ExpectationSuite(name=contract.name.replace("/", "."), expectations=expectations)


def _column_expectations(column: ColumnContract) -> list[Any]:
    import great_expectations.expectations as gxe

    name = column.name
    found: list[Any] = []
    if column.logical_type == "string":
        # A string column may arrive as object or as pandas' string dtype, so check values.
        found.append(
            gxe.ExpectColumnValuesToBeOfType(
                column=name, type_="str", meta={"rule": f"{name} values must be strings"}
            )
        )
    else:
        # ExpectColumnValuesToBeOfType reports tz-aware values as 'Timestamp' and fails correct
        # data; ExpectColumnTypeToBe compares the column's dtype itself, unit and zone included.
        dtype = PANDAS_DTYPES[column.logical_type]
        found.append(
            gxe.ExpectColumnTypeToBe(
                column=name, type_=dtype, meta={"rule": f"{name} must have dtype {dtype}"}
            )
        )
    if not column.nullable:
        found.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=name, meta={"rule": f"{name} must not be null"}
            )
        )
    if column.min_value is not None or column.max_value is not None:
        found.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=column.min_value,
                max_value=column.max_value,
                strict_min=column.strict_min,
                strict_max=column.strict_max,
                meta={"rule": f"{name} must be {column.range_words}"},
            )
        )
    if column.allowed is not None:
        found.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=name,
                value_set=list(column.allowed),
                meta={"rule": f"{name} must be one of {', '.join(column.allowed)}"},
            )
        )
    if column.pattern is not None:
        found.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column=name,
                regex=column.pattern,
                meta={"rule": f"{name} must match {column.pattern}"},
            )
        )
    if column.unique:
        found.append(
            gxe.ExpectColumnValuesToBeUnique(column=name, meta={"rule": f"{name} must be unique"})
        )
    return found


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FailedExpectation:
    """One rule a batch broke, in words and numbers, ready for validation.json."""

    expectation_type: str
    column: str | None
    reason: str
    unexpected_count: int | None = None
    observed_value: Any = None
    examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        """One line for a terminal: the rule and what broke it."""
        return self.reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "expectation_type": self.expectation_type,
            "column": self.column,
            "reason": self.reason,
            "unexpected_count": self.unexpected_count,
            "observed_value": json_safe(self.observed_value),
            "examples": json_safe(self.examples),
        }


@dataclass(frozen=True)
class ValidationOutcome:
    """What the gate concluded about one batch."""

    success: bool
    evaluated: int
    failures: list[FailedExpectation]


def describe_failure(result: Mapping[str, Any], batch_columns: Sequence[str]) -> FailedExpectation:
    """Turn one failed GX expectation result (its JSON dict) into a FailedExpectation.

    Pure, so that the wording is testable without running GX.
    """
    config = result.get("expectation_config") or {}
    expectation_type = str(config.get("type") or config.get("expectation_type") or "unknown")
    kwargs = config.get("kwargs") or {}
    meta = config.get("meta") or {}
    outcome = result.get("result") or {}
    exception = result.get("exception_info") or {}

    column = kwargs.get("column") or kwargs.get("column_A")
    rule = str(meta.get("rule") or expectation_type.replace("_", " "))
    unexpected_count = outcome.get("unexpected_count")
    observed = outcome.get("observed_value")
    examples = list(outcome.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]

    named = [kwargs.get(key) for key in ("column", "column_A", "column_B")]
    missing = [c for c in named if c and c not in batch_columns]
    if missing:
        what = "; ".join(f"column {c!r} is not in the batch" for c in missing)
    elif exception.get("raised_exception"):
        message = str(exception.get("exception_message") or "").strip() or "unknown error"
        what = f"could not be evaluated: {message.splitlines()[0]}"
    elif expectation_type == "expect_table_columns_to_match_set":
        mismatched = (outcome.get("details") or {}).get("mismatched") or {}
        words = []
        if mismatched.get("missing"):
            words.append(f"missing: {', '.join(map(str, mismatched['missing']))}")
        if mismatched.get("unexpected"):
            words.append(f"unexpected: {', '.join(map(str, mismatched['unexpected']))}")
        what = "; ".join(words) or f"observed {observed}"
    elif unexpected_count is not None:
        element_count = outcome.get("element_count")
        of = f" of {element_count}" if element_count is not None else ""
        shown = ", ".join(repr(json_safe(e)) for e in examples)
        what = f"{unexpected_count}{of} rows break it" + (f", e.g. {shown}" if shown else "")
    else:
        what = f"observed {json_safe(observed)!r}"
    return FailedExpectation(
        expectation_type=expectation_type,
        column=str(column) if column else None,
        reason=f"{rule}; {what}",
        unexpected_count=int(unexpected_count) if unexpected_count is not None else None,
        observed_value=observed,
        examples=examples,
    )


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars, timestamps and tuples turned into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# ----------------------------------------------------------------------------- the gate


class ContractGate:
    """Validates DataFrames against their contract's suite, in one ephemeral GX context.

    Building the context and suites costs about a second after the GX import, so build one gate
    and reuse it for every batch of a run.
    """

    def __init__(self, contracts: Sequence[EventContract] = _CONTRACT_LIST) -> None:
        import great_expectations as gx

        self._context = quiet_gx_context()
        asset = self._context.data_sources.add_pandas("landed_batches").add_dataframe_asset("batch")
        batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
        self._definitions: dict[str, Any] = {}
        for contract in contracts:
            suite = self._context.suites.add(build_expectation_suite(contract))
            self._definitions[contract.name] = self._context.validation_definitions.add(
                gx.ValidationDefinition(
                    name=contract.name.replace("/", "."), data=batch_definition, suite=suite
                )
            )

    def validate(
        self, contract: EventContract, frame: pd.DataFrame, day: dt.date
    ) -> ValidationOutcome:
        """Run `contract`'s suite on `frame`, the batch of `day`."""
        definition = self._definitions[contract.name]
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=batch_day_parameters(day),
            result_format="BASIC",
        )
        failures = [
            describe_failure(r.to_json_dict(), list(frame.columns))
            for r in result.results
            if not r.success
        ]
        # Table-level failures (wrong columns, no rows) explain the column-level ones: first.
        failures.sort(key=lambda failure: failure.column is not None)
        return ValidationOutcome(
            success=bool(result.success), evaluated=len(result.results), failures=failures
        )
