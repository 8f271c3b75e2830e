"""The prediction log: every answer of the router (served and shadow), labels joined later by
request id, and the batched writer that keeps all of it off the request path.

Laid out as Feast lays out its online stores: `records` (what is kept), `base` (the interface),
`sql` (statements and row codec the SQL backends share), one module per backend (`sqlite`,
`postgres`), `writer`; `open_prediction_log` picks the backend the settings name.
"""

from __future__ import annotations

from mlsd.settings import Settings, SqlitePredictionLogSettings
from serving.prediction_log.base import PredictionLog
from serving.prediction_log.journal import Journal
from serving.prediction_log.postgres import PostgresPredictionLog
from serving.prediction_log.records import (
    Feedback,
    JoinResult,
    LoggedPrediction,
    PredictionRecord,
    Role,
)
from serving.prediction_log.sql import (
    count_query,
    label_refused,
    label_statements,
    label_values,
    window_query,
)
from serving.prediction_log.sqlite import SqlitePredictionLog
from serving.prediction_log.writer import PredictionLogWriter, WriterStats

__all__ = [
    "Feedback",
    "JoinResult",
    "Journal",
    "LoggedPrediction",
    "PostgresPredictionLog",
    "PredictionLog",
    "PredictionLogWriter",
    "PredictionRecord",
    "Role",
    "SqlitePredictionLog",
    "WriterStats",
    "count_query",
    "label_refused",
    "label_statements",
    "label_values",
    "open_prediction_log",
    "window_query",
]


async def open_prediction_log(settings: Settings) -> PredictionLog:
    """The prediction log the settings choose (`router.prediction_log.type`)."""
    config = settings.router.prediction_log
    if isinstance(config, SqlitePredictionLogSettings):
        return SqlitePredictionLog(config, settings)
    return await PostgresPredictionLog(config).open()
