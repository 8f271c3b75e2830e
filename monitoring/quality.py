"""Great Expectations on a live window: is the data the model answered sane? A failure is a
quality alert (a data defect upstream), which is not drift and never starts a retrain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

# Share of rows an expectation tolerates before it fails (a stray row is not an incident).
MOSTLY = 0.99
# Amounts sent in the wrong unit (schema-break sends cents: x100) against inflation (x1.8):
# more than 2 % of a window's amounts beyond 10x the reference's 95th percentile is a unit
# error. Measured on the default world's amounts: 0.08 % of an inflated window lies beyond,
# 64 % of a window in cents, 6.7 % of one whose tenth is in cents (a window straddling the
# moment the upstream broke). The ceiling this replaced (1 % beyond 20x the reference's largest
# amount) let through a window half in cents: 0.65 % beyond, and its drift started a retrain.
AMOUNT_UNIT_FACTOR = 10.0
AMOUNT_UNIT_MOSTLY = 0.98


@dataclass(frozen=True)
class QualityResult:
    success: bool
    failed: tuple[str, ...]  # "column: what failed (n unexpected)"


def _failure(r: Any) -> str:
    """'column: what failed (n unexpected)', for people."""
    config = r.expectation_config
    column = config.kwargs.get("column", "") if config is not None else ""
    what = config.type.removeprefix("expect_column_values_to_") if config is not None else "?"
    bounds = {k: config.kwargs.get(k) for k in ("min_value", "max_value")} if config else {}
    if bounds.get("min_value") is not None:
        what += f" from {bounds['min_value']:g}"
    if bounds.get("max_value") is not None:
        what += f" up to {bounds['max_value']:g}"
    return f"{column}: {what} ({r.result.get('unexpected_count', '?')} unexpected)"


def check_window(
    window: pd.DataFrame, inputs: list[str], reference: pd.DataFrame | None = None
) -> QualityResult:
    """Scores in [0, 1] and never null; every model input present and not null; amounts
    positive and in the reference's unit."""
    from mlsd.telemetry import quiet_gx_context

    context = quiet_gx_context()  # first: GX reads its analytics switch at import
    import great_expectations as gx
    import great_expectations.expectations as gxe

    missing = [c for c in inputs if c not in window.columns]
    batch = (
        context.data_sources.add_pandas("live")
        .add_dataframe_asset("window")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="live_window"))
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="score"))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0.0, max_value=1.0)
    )
    for c in inputs:
        if c not in missing:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=MOSTLY))
    if "amount" in window.columns:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(column="amount", min_value=0.0, mostly=MOSTLY)
        )
        if reference is not None and "amount" in reference.columns and len(reference):
            ceiling = float(reference["amount"].quantile(0.95)) * AMOUNT_UNIT_FACTOR
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(
                    column="amount", max_value=ceiling, mostly=AMOUNT_UNIT_MOSTLY
                )
            )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="live_window", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": window}, result_format="BASIC")
    failed = [_failure(r) for r in result.results if not r.success]
    failed += [f"{c}: missing from the logged inputs" for c in missing]
    return QualityResult(success=not failed, failed=tuple(failed))
