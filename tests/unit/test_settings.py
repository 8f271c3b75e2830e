"""The settings tree: defaults, environment overrides, a TOML profile, and loud config errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from mlsd.settings import PostgresPredictionLogSettings, Settings, SqlitePredictionLogSettings


def test_defaults_are_local_embedded_and_bound_to_loopback(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.profile == "local"
    assert s.bind_host == "127.0.0.1"
    assert s.data_dir == Path(".mlsd")
    # All state lives under the one data directory.
    for sub in (s.raw_dir, s.archive_dir, s.offline_dir, s.quarantine_dir):
        assert sub.is_relative_to(s.data_dir)


def test_environment_overrides_nested_fields(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSD_SIMULATOR__FRAUD__N_CARDS", "1234")
    monkeypatch.setenv("MLSD_DATA_DIR", str(tmp_path / "lab"))
    s = Settings()
    assert s.simulator.fraud.n_cards == 1234
    assert s.raw_dir == tmp_path / "lab" / "raw"


def test_toml_file_is_read_and_environment_wins(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlsd.toml").write_text('profile = "scale"\n[simulator]\nseed = 99\n')
    assert Settings().simulator.seed == 99
    assert Settings().profile == "scale"
    monkeypatch.setenv("MLSD_SIMULATOR__SEED", "5")
    assert Settings().simulator.seed == 5


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("MLSD_PROFILE", "cloud", "profile"),
        ("MLSD_SIMULATOR__FRAUD__N_CARDS", "-3", "n_cards"),
        ("MLSD_SIMULATOR__FRAUD__COLOUR", "red", "colour"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(monkeypatch, tmp_path, env, value, field):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def settings_fields(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field of `model` and of every model its fields can hold, whatever the annotation
    wraps them in (a union of implementations, Optional, a list or a dict): (dotted path, field).
    A union's members are told apart by class name, e.g. ``router.prediction_log[Postgres...]``."""

    def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation
        for arg in get_args(annotation):
            yield from models_in(arg)

    for name, field in model.model_fields.items():
        yield f"{path}{name}", field
        inner = list(dict.fromkeys(models_in(field.annotation)))
        for sub in inner:
            label = f"{name}[{sub.__name__}]" if len(inner) > 1 else name
            yield from settings_fields(sub, f"{path}{label}.")


def test_every_field_is_described():
    def described(field: FieldInfo) -> bool:
        # A section (a field holding exactly one settings model) may say what it is in its
        # class's docstring instead.
        section = field.annotation
        is_section = isinstance(section, type) and issubclass(section, BaseModel)
        return bool(field.description or (is_section and (section.__doc__ or "").strip()))

    fields = dict(settings_fields(Settings))
    undocumented = [path for path, field in fields.items() if not described(field)]
    assert undocumented == []
    # The walk reaches into unions: both prediction-log backends' own fields are checked.
    for backend in (SqlitePredictionLogSettings, PostgresPredictionLogSettings):
        own = {f"router.prediction_log[{backend.__name__}].{name}" for name in backend.model_fields}
        assert own and own <= fields.keys(), backend.__name__


def test_each_product_has_one_registered_model_name():
    training = Settings(
        training={"fraud_model_name": "cards", "recsys_model_name": "songs"}
    ).training
    assert training.model_name("fraud") == "cards" and training.model_name("recsys") == "songs"
    with pytest.raises(KeyError, match="known: fraud, recsys"):
        training.model_name("ads")


def test_a_shadow_longer_than_its_deadline_is_refused_when_the_settings_load():
    from mlsd.settings import RolloutSettings

    with pytest.raises(ValueError, match=r"shadow_seconds .* must not exceed"):
        RolloutSettings(shadow_seconds=200, max_step_seconds=150)
    assert RolloutSettings(shadow_seconds=150, max_step_seconds=150).shadow_seconds == 150
