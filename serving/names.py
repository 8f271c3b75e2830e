"""How serving names things: its products, the model servers' names of registry versions, and
the label an answer carries. Light (no KServe, Feast or MLflow): the router imports it.

A served name `fraud-v3` is always version 3 of the product's registered model
(`settings.training.model_name("fraud")`), whatever that model is called; answers label it
`fraud/3` (docs/inference-contract.md).
"""

from __future__ import annotations

import re
from typing import cast

from mlsd.settings import WORLDS, World

# One product per simulated world.
Product = World
PRODUCTS: tuple[Product, ...] = WORLDS
SERVED_NAME = re.compile(
    rf"^(?P<product>{'|'.join(map(re.escape, PRODUCTS))})-v(?P<version>[1-9][0-9]*)$"
)


def served_name(product: str, version: str | int) -> str:
    """The model name a version is served under: `fraud-v3` is always `models:/fraud/3`."""
    return f"{product}-v{version}"


def parse_served_name(name: str) -> tuple[Product, str]:
    """(`fraud`, `3`) from `fraud-v3`; ValueError for anything else."""
    match = SERVED_NAME.match(name)
    if match is None:
        raise ValueError(
            f"model name {name!r} is not <product>-v<version> (e.g. fraud-v3, recsys-v1)"
        )
    return cast(Product, match["product"]), match["version"]


def version_label(product: str, version: str | int) -> str:
    """How answers name a version (the model servers' `model_version` output): `fraud/3`."""
    return f"{product}/{version}"
