"""The errors a feature request can raise: each names the fields that are wrong, so the
router can answer a 4xx naming them."""

from __future__ import annotations

from collections.abc import Sequence


class FeatureRequestError(ValueError):
    """A request the feature store cannot answer as asked; `fields` names what is wrong."""

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.fields = tuple(fields)


class MissingEntityKeyError(FeatureRequestError):
    """An entity key (or the event timestamp of a training row) is absent or null."""


class MissingRequestDataError(FeatureRequestError):
    """A field an on-demand feature needs is absent from the request (or null)."""


class UnknownFeatureServiceError(KeyError):
    """No feature service of that name."""
