"""What the libraries would print on their own stays out of a person's terminal, and nothing
else is hidden: MLflow's pip warning (always true under uv, so it says nothing) and the INFO line
Great Expectations logs per context go; MLflow's other warnings stay."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mlsd.telemetry import quiet_gx_context, quiet_libraries


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def kept() -> Iterator[tuple[Kept, list[logging.Logger]]]:
    handler, loggers = Kept(), []
    yield handler, loggers
    for logger in loggers:
        logger.removeHandler(handler)


def listen(kept: tuple[Kept, list[logging.Logger]], name: str) -> logging.Logger:
    handler, loggers = kept
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    loggers.append(logger)
    return logger


def test_mlflows_pip_warning_goes_and_its_other_warnings_stay(kept) -> None:
    quiet_libraries()
    quiet_libraries()  # twice: one filter, not two
    environment = listen(kept, "mlflow.utils.environment")

    environment.warning(
        "Failed to resolve installed pip version. ``pip`` will be added to conda.yaml"
        " environment spec without a version specifier."
    )
    environment.warning("Encountered an unexpected error while inferring pip requirements")

    assert kept[0].messages == ["Encountered an unexpected error while inferring pip requirements"]
    assert len(environment.filters) == 1


def test_a_quiet_gx_context_logs_no_info_and_draws_no_progress_bars(kept) -> None:
    listen(kept, "great_expectations")
    logging.getLogger("great_expectations").setLevel(logging.DEBUG)
    try:
        context = quiet_gx_context()
    finally:
        logging.getLogger("great_expectations").setLevel(logging.NOTSET)

    assert not [m for m in kept[0].messages if "temporary directory" in m], kept[0].messages
    assert context.variables.progress_bars.globally is False
