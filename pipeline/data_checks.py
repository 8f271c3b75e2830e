"""Great Expectations checks on a training set: a model trained on a broken set is never registered."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlsd.telemetry import quiet_gx_context


def check_training_frame(
    frame: pd.DataFrame,
    features: list[str],
    *,
    label: str,
    min_rows: int,
    label_rate: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Enough rows, a label that is 0/1 and never null (with a plausible rate), every feature
    present, finite and not constant-null. Returns {"success", "failed": [reasons]}."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = quiet_gx_context()
    batch = (
        context.data_sources.add_pandas("training")
        .add_dataframe_asset("set")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="training_set"))
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows))
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=label))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=label, value_set=[0, 1]))
    if label_rate:
        suite.add_expectation(
            gxe.ExpectColumnMeanToBeBetween(
                column=label, min_value=label_rate[0], max_value=label_rate[1]
            )
        )
    for feature in features:
        # Defaults fill what the store did not know, so a null here means the join broke.
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=feature))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="training_set", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="BASIC")
    failed = [
        f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column', '')}): {r.result.get('observed_value', r.result.get('unexpected_count'))}"
        for r in result.results
        if not r.success
    ]
    numeric = frame[features].select_dtypes("number")
    infinite = [c for c in numeric.columns if numeric[c].isin([float("inf"), float("-inf")]).any()]
    failed += [f"feature {c} has infinite values" for c in infinite]
    return {"success": bool(result.success) and not infinite, "failed": failed, "rows": len(frame)}
