"""The event vocabulary: names are unique, scoped to the lab, and an unknown name is refused."""

from __future__ import annotations

import pytest

from mlsd import events


def test_vocabulary_is_unique_and_namespaced():
    assert len(set(events.LAB_EVENTS)) == len(events.LAB_EVENTS)
    assert all(name.startswith("mlsd.") for name in events.LAB_EVENTS)


def test_unknown_event_is_refused_before_prefect_is_reached():
    with pytest.raises(ValueError, match=r"unknown lab event 'mlsd\.drift\.detectd'"):
        events.emit("mlsd.drift.detectd", events.model_resource("fraud"))


def test_resources_name_the_product_and_version():
    assert events.model_resource("fraud")["prefect.resource.id"] == "mlsd.model.fraud"
    assert events.world_resource("recsys")["prefect.resource.id"] == "mlsd.world.recsys"
    assert events.version_related("fraud", 3)["prefect.resource.id"] == "mlsd.model-version.fraud.3"
