"""The SQLite online store is in write-ahead-log mode, so a materialisation that writes never
locks out a model server that reads (see features.feast_config.online_store_in_wal)."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from features.feast_config import feast_config, online_store_in_wal, sqlite_online_path
from mlsd.settings import Settings


def read_while_a_writer_holds_the_lock(path) -> list[tuple]:
    with (
        contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer,
        contextlib.closing(sqlite3.connect(path, timeout=0)) as reader,
    ):
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("INSERT INTO features VALUES (2)")
        try:
            return reader.execute("SELECT v FROM features").fetchall()
        finally:
            writer.execute("ROLLBACK")


def test_a_reader_reads_while_a_materialisation_writes(tmp_path):
    settings = Settings(data_dir=tmp_path, features={"online_store": "sqlite"})
    path = sqlite_online_path(settings)
    assert feast_config(settings)["online_store"]["path"] == str(path)

    online_store_in_wal(settings)
    online_store_in_wal(settings)  # again: a no-op
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute("CREATE TABLE features (v INTEGER)")
        conn.execute("INSERT INTO features VALUES (1)")
        conn.commit()

    assert read_while_a_writer_holds_the_lock(path) == [(1,)]  # the last commit, not blocked


def test_in_sqlites_default_mode_the_same_read_is_locked_out(tmp_path):
    """What WAL is for: the same writer in the default rollback-journal mode."""
    path = tmp_path / "online.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE features (v INTEGER)")
        conn.execute("INSERT INTO features VALUES (1)")
        conn.commit()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        read_while_a_writer_holds_the_lock(path)


def test_a_redis_online_store_is_left_alone(tmp_path):
    settings = Settings(data_dir=tmp_path, features={"online_store": "redis"})
    online_store_in_wal(settings)
    assert not sqlite_online_path(settings).exists()
