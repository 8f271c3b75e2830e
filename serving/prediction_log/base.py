"""The prediction log's interface: where predictions and labels are kept, one implementation per
backend (`sqlite`, `postgres`), picked by `router.prediction_log.type`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from serving.names import Product
from serving.prediction_log.records import (
    Feedback,
    JoinResult,
    LoggedPrediction,
    PredictionRecord,
    Role,
)


class PredictionLog(ABC):
    """Where predictions and labels are kept. Async, because the router calls it from its event
    loop; implementations that block do so on their own threads."""

    @abstractmethod
    async def write_many(self, records: Sequence[PredictionRecord]) -> None:
        """Append records (one transaction; a record already logged is replaced)."""

    @abstractmethod
    async def join_label(self, feedback: Feedback) -> JoinResult:
        """Attach feedback to the predictions of its request id (both roles)."""

    @abstractmethod
    async def window(
        self,
        product: Product,
        arm: str,
        since: float,
        until: float,
        role: Role | None = None,
    ) -> list[LoggedPrediction]:
        """One arm's predictions with since <= at < until (epoch seconds), labels joined."""

    @abstractmethod
    async def count(self, product: Product | None = None) -> int:
        """Rows logged (both roles), for status pages and tests."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; everything written so far stays."""
