"""The settings tree: defaults, environment overrides, a TOML profile, and loud config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlsd.settings import Settings


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


def test_every_field_is_described():
    def walk(model):
        for name, f in model.model_fields.items():
            if isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields"):
                yield from walk(f.annotation)
            else:
                yield name, f.description

    undocumented = [name for name, description in walk(Settings) if not description]
    assert undocumented == []


def test_each_product_has_one_registered_model_name():
    training = Settings(
        training={"fraud_model_name": "cards", "recsys_model_name": "songs"}
    ).training
    assert training.model_name("fraud") == "cards" and training.model_name("recsys") == "songs"
    with pytest.raises(KeyError, match="known: fraud, recsys"):
        training.model_name("ads")
