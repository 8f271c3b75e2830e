"""The feature contract without Feast: catalog, on-demand transforms, request checks, config."""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from features.catalog import (
    ENTITIES,
    EVENT_EPOCH_S,
    GENRES,
    ON_DEMAND,
    SERVICES,
    VIEWS,
    affinity_feature,
    service_features,
)
from features.on_demand import TRANSFORMATIONS, listening_context, transaction_context
from features.store import (
    MissingEntityKeyError,
    MissingRequestDataError,
    UnknownFeatureServiceError,
    feast_config,
    finish_online,
    online_row,
    online_store_type,
    service_plan,
)
from mlsd.settings import FeatureStoreSettings, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_genres_follow_the_data_contract() -> None:
    text = (ROOT / "docs" / "data-contract.md").read_text()
    listed = re.search(r"^GENRES: (.+)$", text, re.MULTILINE)
    assert listed is not None
    assert tuple(g.strip() for g in listed.group(1).split(",")) == GENRES


def test_every_service_has_unique_feature_names_and_known_views() -> None:
    for service in SERVICES.values():
        names = [f.name for f in service_features(service)]
        assert len(names) == len(set(names)), service.name
        assert all(v in VIEWS for v in service.views)
        assert all(o in ON_DEMAND for o in service.on_demand)
    for view in VIEWS.values():
        assert view.entity in ENTITIES


def _inputs(name: str, values: dict) -> dict[str, list]:
    """One row of everything an on-demand view's sources provide, from the catalog's names."""
    spec = ON_DEMAND[name]
    row = {f.name: None for v in spec.sources for f in VIEWS[v].features}
    row.update({f.name: None for f in spec.request})
    row.update(values)
    return {k: [v] for k, v in row.items()}


def test_transaction_context_known_answers() -> None:
    noon = 1_767_268_800.0  # 2026-01-01 12:00 UTC
    out = transaction_context(
        _inputs(
            "transaction_context",
            {
                "amount": 150.0,
                "country": "FR",
                "device_id": "d9",
                EVENT_EPOCH_S: noon,
                "card_amount_mean_30d": 50.0,
                "card_tx_count_30d": 4,
                "card_home_country": "US",
                "card_known_devices": ["d1", "d2"],
                "card_last_tx_epoch_s": noon - 90.0,
            },
        )
    )
    assert out == {
        "amount_over_card_mean": [3.0],
        "is_foreign_country": [1],
        "is_new_device": [1],
        "hour_of_day": [12],
        "seconds_since_last_tx": [90.0],
    }
    assert set(out) == {f.name for f in ON_DEMAND["transaction_context"].features}


@pytest.mark.parametrize("missing", [None, math.nan])
def test_transforms_treat_none_and_nan_as_unknown(missing: object) -> None:
    fraud = transaction_context(
        _inputs(
            "transaction_context",
            {
                "amount": 10.0,
                "country": "US",
                "device_id": "d1",
                EVENT_EPOCH_S: 3600.0,
                "card_amount_mean_30d": missing,
                "card_tx_count_30d": missing,
                "card_home_country": None,
                "card_known_devices": None,
                "card_last_tx_epoch_s": missing,
            },
        )
    )
    assert fraud == {
        "amount_over_card_mean": [-1.0],
        "is_foreign_country": [0],
        "is_new_device": [1],
        "hour_of_day": [1],
        "seconds_since_last_tx": [-1.0],
    }
    recsys = listening_context(
        _inputs(
            "listening_context",
            {
                EVENT_EPOCH_S: 86_400.0,
                "item_genre": None,
                "user_last_play_epoch_s": missing,
                "item_released_epoch_s": missing,
            },
        )
    )
    assert recsys == {
        "user_genre_affinity_for_item": [0.0],
        "seconds_since_last_play": [-1.0],
        "item_age_days": [-1.0],
    }
    defaults = {f.name: [f.default] for f in ON_DEMAND["listening_context"].features}
    assert recsys == defaults


def test_listening_context_known_answers() -> None:
    affinity = {affinity_feature(g): 0.0 for g in GENRES}
    affinity[affinity_feature("jazz")] = 0.25
    out = listening_context(
        _inputs(
            "listening_context",
            {
                EVENT_EPOCH_S: 10 * 86_400.0,
                **affinity,
                "item_genre": "jazz",
                "user_last_play_epoch_s": 10 * 86_400.0 - 60,
                "item_released_epoch_s": 4 * 86_400.0,
            },
        )
    )
    assert out == {
        "user_genre_affinity_for_item": [0.25],
        "seconds_since_last_play": [60.0],
        "item_age_days": [6.0],
    }


@pytest.mark.parametrize("name", sorted(TRANSFORMATIONS))
def test_transforms_run_from_their_source_alone(name: str) -> None:
    """Feast may rebuild a transform from its source text in a bare namespace."""
    namespace: dict = {"__name__": "feast_udf_rehydrate"}
    exec(inspect.getsource(TRANSFORMATIONS[name]), namespace)
    rebuilt = namespace[name]
    sample = _inputs(name, {EVENT_EPOCH_S: 0.0, "amount": 1.0, "country": "US", "device_id": "d"})
    assert rebuilt(sample) == TRANSFORMATIONS[name](sample)


def test_request_checks_name_the_missing_field() -> None:
    plan = service_plan("fraud_scoring", feast_service=None)
    with pytest.raises(MissingRequestDataError, match="'device_id'") as err:
        online_row(plan, {"card_id": "c", "merchant_id": "m"}, {"amount": 1.0, "country": "US"})
    assert err.value.fields == ("device_id",)
    with pytest.raises(MissingEntityKeyError, match="'merchant_id'"):
        online_row(plan, {"card_id": "c"}, {"amount": 1.0, "country": "US", "device_id": "d"})
    with pytest.raises(UnknownFeatureServiceError):
        service_plan("fraud_v0", feast_service=None)


def test_online_row_uses_the_request_time() -> None:
    plan = service_plan("fraud_scoring", feast_service=None)
    row = online_row(
        plan,
        {"card_id": 7, "merchant_id": "m"},
        {
            "amount": "12.5",
            "country": "US",
            "device_id": "d",
            "event_timestamp": "2026-01-01T00:00:01.000002Z",
        },
    )
    assert row == {
        "card_id": "7",
        "merchant_id": "m",
        "amount": 12.5,
        "country": "US",
        "device_id": "d",
        EVENT_EPOCH_S: 1_767_225_601.000002,
    }


def test_unknown_entity_gets_defaults_and_marker() -> None:
    plan = service_plan("recsys_ranking", feast_service=None)
    # Two candidates: the first item known to the store, the second not; the user unknown.
    served: dict[str, list] = {f.name: [None, None] for f in plan.outputs}
    served.update({"item_plays_7d": [3, None], "item_genre_index": [2, None]})
    served.update({"item_duration_seconds": [200.0, None], "item_impressions_7d": [5, None]})
    served.update({"item_play_rate_7d": [0.6, None]})
    out = finish_online(plan, served, 2)
    assert out["user_unknown"] == [True, True] and out["item_unknown"] == [False, True]
    assert out["user_plays_7d"] == [0, 0] and out["item_plays_7d"] == [3, 0]
    assert all(None not in column for column in out.values())


def test_settings_pick_the_online_store_by_profile() -> None:
    assert online_store_type(Settings(profile="local")) == "sqlite"
    assert online_store_type(Settings(profile="scale")) == "redis"
    assert (
        online_store_type(Settings(profile="scale", features={"online_store": "sqlite"}))
        == "sqlite"
    )
    with pytest.raises(ValueError):
        FeatureStoreSettings(online_stor="redis")  # type: ignore[call-arg]


def test_feast_config_keeps_all_state_under_the_data_dir(tmp_path: Path) -> None:
    local = feast_config(Settings(data_dir=tmp_path))
    assert local["online_store"] == {
        "type": "sqlite",
        "path": str(tmp_path.resolve() / "features" / "online.db"),
    }
    assert local["registry"]["path"] == str(tmp_path.resolve() / "features" / "registry.db")
    assert local["offline_store"] == {"type": "file"} and local["provider"] == "local"
    scale = feast_config(
        Settings(data_dir=tmp_path, profile="scale", features={"redis": {"port": 6390}})
    )
    assert scale["online_store"] == {"type": "redis", "connection_string": "127.0.0.1:6390,db=0"}


def test_cli_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, mlsd.commands.features\n"
        "heavy = [m for m in ('feast', 'pandas', 'pyarrow', 'features.store') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
