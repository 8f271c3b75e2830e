"""Feature store: online lookup latency, materialisation and training-frame throughput.

Measured on two simulated weeks of both worlds, online on SQLite and on Redis.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.record import Figure, load, record
from mlsd.settings import Settings

DAYS = 14
LOOKUPS, ROUNDS, WARMUP = 1_000, 5, 300
SQLITE_P99_TARGET_MS = 2.0
# The Feast Python feature server with Redis, one entity, on far larger machines (shared/STACK.md).
FEAST_SERVER_P99_MS = 7.0
TRAINING_ROWS: dict[Literal["asof", "feast"], int | None] = {"asof": None, "feast": 500}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    import redis

    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            client.ping()
            return process, port
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    return None


def _simulated_world(settings: Settings) -> dict[str, int]:
    """Two weeks of the default-sized worlds, written as the offline store's partitions."""
    from simulator import simulate_frames
    from tests.support.sample_world import DAY_COLUMNS, write_offline

    sizes = {}
    for world in ("fraud", "recsys"):
        frames = simulate_frames(settings, world, days=DAYS, seed=3)
        frames.pop("truth", None)
        write_offline(settings, world, frames, DAY_COLUMNS[world])
        sizes.update({f"{world}_{name}": len(frame) for name, frame in frames.items()})
    return sizes


def _fraud_requests(settings: Settings, n: int) -> list[tuple[dict, dict]]:
    from features.tables import read_events, world_clock

    tx = read_events(settings, "fraud", "transactions").sample(n, random_state=1)
    clock = world_clock(settings, "fraud")
    assert clock is not None
    now = clock.timestamp()
    return [
        (
            {"card_id": row.card_id, "merchant_id": row.merchant_id},
            {
                "amount": row.amount,
                "country": row.country,
                "device_id": row.device_id,
                "event_epoch_s": now,
            },
        )
        for row in tx.itertuples()
    ]


def _lookup_benchmark(settings: Settings, requests: list[tuple[dict, dict]]) -> dict[str, float]:
    """The facade and Feast's own path, call for call in turn, so both see the same machine load;
    in rounds, to show how much of the tail is other processes on the same two cores."""
    from features.store import get_store, online_features

    store = get_store(settings)
    service = store.get_feature_service("fraud_scoring")

    def facade(i: int) -> None:
        entity, request = requests[i % len(requests)]
        online_features(entity, request, "fraud_scoring", settings=settings)

    def feast_only(i: int) -> None:
        entity, request = requests[i % len(requests)]
        store.get_online_features(features=service, entity_rows=[{**entity, **request}]).to_dict()

    for i in range(WARMUP):
        facade(i)
        feast_only(i)
    gc.collect()
    ours, theirs = np.empty((ROUNDS, LOOKUPS)), np.empty((ROUNDS, LOOKUPS))
    for r in range(ROUNDS):
        for i in range(LOOKUPS):
            started = time.perf_counter()
            facade(i)
            middle = time.perf_counter()
            feast_only(i)
            ours[r, i], theirs[r, i] = middle - started, time.perf_counter() - middle
    ours, theirs = ours * 1e3, theirs * 1e3
    return {
        "p50": float(np.percentile(ours, 50)),
        "p99": float(np.percentile(ours, 99)),
        "quietest_round_p99": float(np.percentile(ours, 99, axis=1).min()),
        "feast_p50": float(np.percentile(theirs, 50)),
        "feast_p99": float(np.percentile(theirs, 99)),
        "load_1m": os.getloadavg()[0],
    }


def _slate_benchmark(settings: Settings) -> dict[str, float]:
    """The recommender's ranking lookup as a model server makes it: one user and a slate of
    candidates (training.recsys.candidates), the item rows from the online-row cache
    (model_servers.cached_views, feature_cache_ttl_s), its misses read from the store; and the
    same slates read without the cache, call for call in turn."""
    from features.online_cache import OnlineFeatureCache
    from features.store import online_feature_columns
    from features.tables import read_events, world_clock

    servers, size = settings.model_servers, settings.training.recsys.candidates
    plays = read_events(settings, "recsys", "interactions")
    users = plays["user_id"].drop_duplicates().sample(200, random_state=4).tolist()
    items = plays["item_id"].value_counts().index[: size * 3].tolist()
    clock = world_clock(settings, "recsys")
    assert clock is not None
    request = {"event_epoch_s": clock.timestamp()}
    cache = OnlineFeatureCache(servers.cached_views, servers.feature_cache_ttl_s)
    rng = np.random.default_rng(5)
    slates = [rng.choice(items, size, replace=False).tolist() for _ in range(50)]

    def lookup(i: int, with_cache: bool) -> None:
        user, slate = users[i % len(users)], slates[i % len(slates)]
        online_feature_columns(
            [{"user_id": user, "item_id": item} for item in slate],
            request,
            "recsys_ranking",
            settings=settings,
            cache=cache if with_cache else None,
        )

    for i in range(WARMUP):
        lookup(i, True)
        lookup(i, False)
    gc.collect()
    n = LOOKUPS * ROUNDS // 5
    cached, direct = np.empty(n), np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        lookup(i, True)
        middle = time.perf_counter()
        lookup(i, False)
        cached[i], direct[i] = middle - started, time.perf_counter() - middle
    cached, direct = cached * 1e3, direct * 1e3
    return {
        "slate": size,
        "lookups": n,
        "p50": float(np.percentile(cached, 50)),
        "p99": float(np.percentile(cached, 99)),
        "direct_p50": float(np.percentile(direct, 50)),
        "direct_p99": float(np.percentile(direct, 99)),
        "hit_rate": cache.hits / max(cache.hits + cache.misses, 1),
        "load_1m": os.getloadavg()[0],
    }


def _lookup_figures(
    backend: str, lookup: dict[str, float], target_ms: float, target: str
) -> list[Figure]:
    return [
        Figure(f"online fraud_scoring, {backend}, p50 (facade + on-demand)", lookup["p50"], "ms"),
        Figure(
            f"online fraud_scoring, {backend}, p99 (facade + on-demand)",
            lookup["p99"],
            "ms",
            target,
            lookup["p99"] < target_ms,
        ),
    ]


def _lookup_note(backend: str, lookup: dict[str, float]) -> str:
    return (
        f"{backend}: Feast's own path for the same lookups (get_online_features on the service, "
        f"its on-demand machinery), measured in turn: p50 {lookup['feast_p50']:.3f} ms, p99 "
        f"{lookup['feast_p99']:.3f} ms; the facade's p99 in its quietest round of {LOOKUPS}: "
        f"{lookup['quietest_round_p99']:.3f} ms (load {lookup['load_1m']:.2f} after)."
    )


def _materialize(settings: Settings) -> tuple[int, int, float]:
    from features.store import materialize

    started = time.perf_counter()
    reports = materialize(settings)
    seconds = time.perf_counter() - started
    return sum(r.rows_scanned for r in reports), sum(r.entities_written for r in reports), seconds


def main() -> None:
    from features import store, tables

    before = load()
    figures: list[Figure] = []
    sizes: dict[str, Any] = {"days": DAYS, "lookups": LOOKUPS * ROUNDS, "warmup": WARMUP}
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Settings(data_dir=Path(tmp))
        sizes.update(_simulated_world(sqlite))

        started = time.perf_counter()
        built = tables.build(sqlite)
        build_s = time.perf_counter() - started
        sizes["feature_table_rows"] = sum(sum(b.rows.values()) for b in built)
        events = sum(sum(b.events.values()) for b in built)
        figures.append(Figure("feature tables built from raw events", events / build_s, "events/s"))

        started = time.perf_counter()
        store.apply(sqlite)
        figures.append(
            Figure("apply (first, includes importing Feast)", time.perf_counter() - started, "s")
        )

        scanned, entities, seconds = _materialize(sqlite)
        figures.append(
            Figure("materialise to SQLite (first run, all views)", scanned / seconds, "rows/s")
        )
        figures.append(
            Figure("materialise to SQLite: entities written", entities / seconds, "entities/s")
        )
        sizes["rows_materialised"], sizes["entities_materialised"] = scanned, entities

        requests = _fraud_requests(sqlite, 500)
        lookup = _lookup_benchmark(sqlite, requests)
        figures += _lookup_figures(
            "SQLite", lookup, SQLITE_P99_TARGET_MS, f"< {SQLITE_P99_TARGET_MS:g} ms"
        )
        notes.append(_lookup_note("SQLite", lookup))

        slate = _slate_benchmark(sqlite)
        label = f"online recsys_ranking, SQLite, slate of {slate['slate']:.0f}, item rows cached"
        figures.append(Figure(f"{label}, p50", slate["p50"], "ms"))
        figures.append(Figure(f"{label}, p99", slate["p99"], "ms"))
        notes.append(
            f"SQLite: the recommender's slate lookup ({slate['slate']:.0f} candidates, one user, "
            f"{slate['lookups']:.0f} calls) with the online-row cache (cachetools TTLCache, "
            f"hit rate {slate['hit_rate']:.1%}); the same slates read without it, in turn: p50 "
            f"{slate['direct_p50']:.3f} ms, p99 {slate['direct_p99']:.3f} ms "
            f"(load {slate['load_1m']:.2f} after)."
        )

        tx = tables.read_events(sqlite, "fraud", "transactions")
        rows = tx[["card_id", "merchant_id", "event_timestamp", "amount", "country", "device_id"]]
        for engine, n in TRAINING_ROWS.items():
            sample = rows.sample(min(n or len(rows), len(rows)), random_state=2)
            store.training_frame(sample.head(50), "fraud_scoring", settings=sqlite, engine=engine)
            started = time.perf_counter()
            store.training_frame(sample, "fraud_scoring", settings=sqlite, engine=engine)
            rate = len(sample) / (time.perf_counter() - started)
            figures.append(Figure(f"training frame fraud_scoring, engine {engine}", rate, "rows/s"))
            sizes[f"training_rows_{engine}"] = len(sample)

        redis_server = _start_redis()
        if redis_server is None:
            notes.append("redis-server not installed: Redis figures not measured.")
        else:
            process, port = redis_server
            try:
                # Same tables and registry file, its own Feast project, Redis as online store.
                redis = Settings(
                    data_dir=Path(tmp),
                    profile="scale",
                    features={"redis": {"port": port}, "project": "mlsd_redis"},
                )
                store.apply(redis)
                scanned, _, seconds = _materialize(redis)
                figures.append(
                    Figure(
                        "materialise to Redis (first run, all views)", scanned / seconds, "rows/s"
                    )
                )
                lookup = _lookup_benchmark(redis, requests)
                figures += _lookup_figures(
                    "Redis",
                    lookup,
                    FEAST_SERVER_P99_MS,
                    f"< {FEAST_SERVER_P99_MS:g} ms (Feast Python server + Redis, published)",
                )
                notes.append(_lookup_note("Redis", lookup))
            finally:
                process.terminate()
                process.wait(timeout=10)

    notes.append(
        "In-process lookups of one card + merchant with 5 on-demand features, random entities "
        f"from {len(requests)} sampled transactions; sequential, {ROUNDS} rounds of {LOOKUPS} "
        f"after {WARMUP} warm-up calls; p50/p99 over all {ROUNDS * LOOKUPS}. Materialisation "
        "rows/s counts feature-table rows read in the window (one per change of a feature), "
        "entities/s the latest rows written online. The feast training engine pairs every "
        "entity row with every feature row of its entity, so its rate falls as history grows. "
        f"Measured at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC."
    )
    record(
        "features",
        figures,
        sizes,
        concurrency="1 (sequential, in-process)",
        notes=" ".join(notes),
        load_before=before,
    )


if __name__ == "__main__":
    main()
