"""The recommender's last resort: the popularity list, overall and per genre."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from features.catalog import GENRES
from mlsd.settings import Settings
from serving.fallback.answers import RecsAnswer

log = logging.getLogger("serving.fallback")


class PopularityList:
    """The recommender's last resort: the most played items overall and per genre.

    Where it comes from: the recsys model server's own cold-start answer (an unknown user gets
    the popularity path of the served model), asked in the background every few minutes while
    the server is up, so the fallback always matches the model's notion of popular and costs
    nothing on the request path. It is kept in <data_dir>/router/popularity.json, so a router
    that starts while the model server is down still has it; on a first start with neither, it
    is seeded from the offline store's item_stats feature table (plays over 7 days).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.overall: list[tuple[str, float]] = []
        self.by_genre: dict[str, list[tuple[str, float]]] = {}
        self.source = "none"
        self.updated_at: float | None = None
        self._save_lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text())
            self.overall = [(str(i), float(s)) for i, s in saved["overall"]]
            self.by_genre = {
                g: [(str(i), float(s)) for i, s in items] for g, items in saved["by_genre"].items()
            }
            self.source, self.updated_at = f"{saved['source']} (saved)", saved["updated_at"]
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def save(self) -> None:
        """Write the list atomically (a reader sees the old file or the new one, whole)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._save_lock:  # saves come from worker threads: the seed and the refreshes
            self._save()

    def _save(self) -> None:
        partial = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        partial.write_text(
            json.dumps(
                {
                    "source": self.source,
                    "updated_at": self.updated_at,
                    "overall": self.overall,
                    "by_genre": self.by_genre,
                }
            )
        )
        os.replace(partial, self.path)

    def update(
        self,
        overall: Sequence[tuple[str, float]],
        by_genre: Mapping[str, Sequence[tuple[str, float]]],
        source: str,
    ) -> None:
        if overall:
            self.overall = list(overall)
        self.by_genre.update({g: list(v) for g, v in by_genre.items() if v})
        self.source, self.updated_at = source, time.time()

    def recommend(self, k: int, genre_hint: str | None = None) -> RecsAnswer:
        """Top k, the hinted genre's first (then the overall list, without repeats)."""
        chosen: list[tuple[str, float]] = []
        seen: set[str] = set()
        for item, score in [*self.by_genre.get(genre_hint or "", []), *self.overall]:
            if item not in seen:
                seen.add(item)
                chosen.append((item, score))
            if len(chosen) == k:
                break
        return RecsAnswer(tuple(chosen), "popularity", "popularity")

    def seed_from_feature_table(self, settings: Settings, keep: int = 500) -> bool:
        """Fill an empty list from the item_stats feature table; False when there is none."""
        try:
            import pyarrow.parquet as pq

            from features.catalog import ITEM_POPULARITY_WINDOW
            from features.table_files import table_path

            plays = f"item_plays_{ITEM_POPULARITY_WINDOW[0]}"
            frame = pq.read_table(
                table_path(settings, "item_stats"),
                columns=["item_id", "event_timestamp", plays, "item_genre"],
            ).to_pandas()
        except Exception as err:
            log.info("no item_stats table to seed the popularity fallback: %s", err)
            return False
        latest = frame.sort_values("event_timestamp").drop_duplicates("item_id", keep="last")
        latest = latest.sort_values([plays, "item_id"], ascending=[False, True])
        total = max(float(latest[plays].sum()), 1.0)

        def ranked(rows: Any) -> list[tuple[str, float]]:
            top = rows.head(keep)
            return [
                (str(i), float(p) / total) for i, p in zip(top["item_id"], top[plays], strict=True)
            ]

        self.update(
            ranked(latest),
            {g: ranked(latest[latest["item_genre"] == g]) for g in GENRES},
            "item_stats feature table",
        )
        return True
