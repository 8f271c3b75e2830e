"""The simulated listening world: listeners with hidden tastes, items with hidden factors and
power-law popularity, sessions where a slate is shown and each item is played or skipped.

Choice model: an item at slot p of a slate is played with probability
sigmoid(3·taste·factor + 0.1·log popularity − 1) × 1/log2(p + 2): the better the match and the
higher the slot, the likelier the play (position bias). New items are released every day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlsd.settings import RecsysWorldSettings
from simulator.common import (
    COUNTRIES,
    COUNTRY_WEIGHTS,
    SECONDS_PER_DAY,
    DayOutput,
    day_start_us,
    ids,
    seconds_in_day,
    stream,
    to_timestamps,
)
from simulator.scenarios import RecsysKnobs

GENRES = (
    "pop",
    "rock",
    "hiphop",
    "electronic",
    "jazz",
    "classical",
    "country",
    "latin",
    "rnb",
    "metal",
    "folk",
    "ambient",
)
# Catalogue share of each genre.
GENRE_WEIGHTS = np.array([18, 14, 12, 10, 5, 4, 7, 8, 8, 5, 5, 4], dtype=float)
GENRE_WEIGHTS /= GENRE_WEIGHTS.sum()

_GENRE_SPACE, _USERS, _ITEMS, _CATALOG_DROP, _SESSIONS = range(5)
_IDS_PER_DAY = 10_000_000
_SESSION_BLOCK = 2_000  # sessions scored at once; bounds memory at blocks x catalogue floats


@dataclass(frozen=True)
class _Cohort:
    """Users or items that appeared on one day (day 0 holds everyone from before)."""

    vectors: np.ndarray
    genre: np.ndarray
    appeared_us: np.ndarray
    extra: np.ndarray  # users: activity; items: popularity weight
    extra2: np.ndarray  # users: country index; items: duration in seconds


@dataclass(frozen=True)
class RecsysPopulation:
    """Everyone and everything that exists up to the last simulated day."""

    epoch_us: int  # start of the world's first day: its batches also carry everyone from before
    genre_centroids: np.ndarray
    user_ids: np.ndarray
    user_taste: np.ndarray
    user_activity: np.ndarray
    user_country: np.ndarray
    user_signup_us: np.ndarray
    item_ids: np.ndarray
    item_factor: np.ndarray
    item_genre: np.ndarray
    item_popularity: np.ndarray
    item_duration_s: np.ndarray
    item_released_us: np.ndarray


def _genre_centroids(seed: int, dim: int) -> np.ndarray:
    centroids = stream(seed, _GENRE_SPACE).standard_normal((len(GENRES), dim))
    return centroids / np.linalg.norm(centroids, axis=1, keepdims=True)


def _user_cohort(
    rng: np.random.Generator, n: int, centroids: np.ndarray, start_us: int, span_us: int
) -> _Cohort:
    favourite = rng.choice(len(GENRES), size=n, p=GENRE_WEIGHTS)
    second = rng.choice(len(GENRES), size=n, p=GENRE_WEIGHTS)
    taste = (
        0.7 * centroids[favourite]
        + 0.3 * centroids[second]
        + 0.25 * rng.standard_normal((n, centroids.shape[1]))
    )
    return _Cohort(
        vectors=taste,
        genre=favourite,
        appeared_us=start_us + (rng.random(n) * span_us).astype(np.int64),
        extra=rng.lognormal(0.0, 0.6, n),
        extra2=rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS),
    )


def _item_cohort(
    rng: np.random.Generator,
    n: int,
    centroids: np.ndarray,
    start_us: int,
    span_us: int,
    zipf: float,
) -> _Cohort:
    genre = rng.choice(len(GENRES), size=n, p=GENRE_WEIGHTS)
    factor = centroids[genre] + 0.35 * rng.standard_normal((n, centroids.shape[1]))
    return _Cohort(
        vectors=factor,
        genre=genre,
        appeared_us=start_us + (rng.random(n) * span_us).astype(np.int64),
        # A uniform rank turned into a power law: weight = (N / rank) ** zipf.
        extra=(1.0 - rng.random(n)) ** (-zipf),
        extra2=np.clip(rng.normal(215.0, 60.0, n), 30.0, 1200.0).round(1),
    )


def build_population(
    cfg: RecsysWorldSettings,
    seed: int,
    epoch: dt.date,
    last_day: dt.date,
    knobs: RecsysKnobs,
    drift_start: dt.date,
) -> RecsysPopulation:
    """Users and items from the epoch to `last_day`; the scenario's catalogue drop lands on `drift_start`."""
    centroids = _genre_centroids(seed, cfg.latent_dim)
    day_us = SECONDS_PER_DAY * 1_000_000
    epoch_us = day_start_us(epoch)
    users = [
        _user_cohort(
            stream(seed, _USERS, 0), cfg.n_users, centroids, epoch_us - 730 * day_us, 730 * day_us
        )
    ]
    items = [
        _item_cohort(
            stream(seed, _ITEMS, 0),
            cfg.n_items,
            centroids,
            epoch_us - 3650 * day_us,
            3650 * day_us,
            cfg.popularity_exponent,
        )
    ]
    day = epoch + dt.timedelta(days=1)
    while day <= last_day:
        start = day_start_us(day)
        users.append(
            _user_cohort(
                stream(seed, _USERS, day.toordinal()),
                cfg.new_users_per_day,
                centroids,
                start,
                day_us,
            )
        )
        items.append(
            _item_cohort(
                stream(seed, _ITEMS, day.toordinal()),
                cfg.new_items_per_day,
                centroids,
                start,
                day_us,
                cfg.popularity_exponent,
            )
        )
        day += dt.timedelta(days=1)
    if knobs.catalog_drop_multiplier > 1.0 and epoch <= drift_start <= last_day:
        n_drop = round(cfg.new_items_per_day * (knobs.catalog_drop_multiplier - 1.0))
        # The drop is released in the first hour, so it is available for the whole day.
        items.append(
            _item_cohort(
                stream(seed, _CATALOG_DROP, drift_start.toordinal()),
                n_drop,
                centroids,
                day_start_us(drift_start),
                3600 * 1_000_000,
                cfg.popularity_exponent,
            )
        )

    def cat(cohorts: list[_Cohort], field: str) -> np.ndarray:
        return np.concatenate([getattr(c, field) for c in cohorts])

    taste = cat(users, "vectors")
    if knobs.taste_shift > 0:
        target = centroids[GENRES.index(knobs.taste_shift_genre)]
        taste = (1.0 - knobs.taste_shift) * taste + knobs.taste_shift * target
    n_users, n_items = taste.shape[0], sum(c.genre.size for c in items)
    return RecsysPopulation(
        epoch_us=epoch_us,
        genre_centroids=centroids,
        user_ids=ids("u_", np.arange(1, n_users + 1), 6),
        user_taste=taste,
        user_activity=cat(users, "extra"),
        user_country=cat(users, "extra2"),
        user_signup_us=cat(users, "appeared_us"),
        item_ids=ids("i_", np.arange(1, n_items + 1), 6),
        item_factor=cat(items, "vectors"),
        item_genre=cat(items, "genre"),
        item_popularity=cat(items, "extra"),
        item_duration_s=cat(items, "extra2"),
        item_released_us=cat(items, "appeared_us"),
    )


def affinity(pop: RecsysPopulation, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The hidden match between users and items (the world's truth a recommender tries to learn)."""
    return np.einsum("ij,ij->i", pop.user_taste[users], pop.item_factor[items])


def simulate_day(
    pop: RecsysPopulation, cfg: RecsysWorldSettings, knobs: RecsysKnobs, seed: int, day: dt.date
) -> DayOutput:
    """One day of listening: sessions, each a slate shown and played or skipped item by item."""
    rng = stream(seed, _SESSIONS, day.toordinal())
    start_us = day_start_us(day)
    end_us = start_us + SECONDS_PER_DAY * 1_000_000
    active_users = np.flatnonzero(pop.user_signup_us < end_us)
    sessions = rng.poisson(cfg.sessions_per_user_per_day * pop.user_activity[active_users])
    session_user = np.repeat(active_users, sessions)
    session_t_us = start_us + (seconds_in_day(rng, session_user.size) * 1e6).astype(np.int64)
    # A session cannot start before its user signed up.
    session_t_us = np.maximum(
        session_t_us, np.minimum(pop.user_signup_us[session_user] + 1, end_us - 1)
    )
    catalogue = np.flatnonzero(pop.item_released_us < end_us)
    k = min(cfg.slate_size, catalogue.size)

    # The platform's current policy picks each slate: a taste match plus popularity (so what
    # people play depends on both, as on a real service), with a push for fresh releases when a
    # catalogue drop is being promoted.
    prior = 0.5 * np.log(pop.item_popularity[catalogue])
    if knobs.catalog_drop_multiplier > 1.0:
        prior = prior + 2.0 * (
            pop.item_released_us[catalogue] >= start_us - 3 * SECONDS_PER_DAY * 1_000_000
        )
    slates = np.empty((session_user.size, k), dtype=np.int64)
    for lo in range(0, session_user.size, _SESSION_BLOCK):
        block = session_user[lo : lo + _SESSION_BLOCK]
        logits = prior + 4.0 * (pop.user_taste[block] @ pop.item_factor[catalogue].T)
        logits += rng.gumbel(size=logits.shape)  # Gumbel top-k: sampling without replacement
        top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(logits, top, axis=1), axis=1)
        slates[lo : lo + block.size] = catalogue[np.take_along_axis(top, order, axis=1)]

    user = np.repeat(session_user, k)
    item = slates.ravel()
    position = np.tile(np.arange(k), session_user.size)
    taste = affinity(pop, user, item)
    utility = 3.0 * taste + 0.1 * np.log(pop.item_popularity[item]) - 1.0
    p_play = 1.0 / (1.0 + np.exp(-utility)) / np.log2(position + 2.0)
    played = rng.random(item.size) < p_play
    duration = pop.item_duration_s[item]
    dwell = np.where(
        played,
        duration * rng.uniform(0.5, 1.0, item.size),
        np.minimum(rng.uniform(1.0, 20.0, item.size), duration),
    )
    # Each slot is seen a few seconds after the one above it.
    t_us = np.repeat(session_t_us, k) + position * 3_000_000
    t_us = np.minimum(t_us, end_us - 1)

    order = np.argsort(t_us, kind="stable")
    session_ids = day.toordinal() * _IDS_PER_DAY + np.repeat(np.arange(1, session_user.size + 1), k)
    interactions = pd.DataFrame(
        {
            "interaction_id": day.toordinal() * _IDS_PER_DAY
            + np.arange(1, item.size + 1, dtype=np.int64),
            "event_timestamp": to_timestamps(t_us[order]),
            "session_id": session_ids[order].astype(np.int64),
            "user_id": pop.user_ids[user[order]],
            "item_id": pop.item_ids[item[order]],
            "position": position[order].astype(np.int64),
            "event": np.where(played[order], "play", "skip").astype(object),
            "dwell_seconds": np.round(dwell[order], 1),
        }
    )
    truth = pd.DataFrame(
        {
            "interaction_id": interactions["interaction_id"],
            "affinity": taste[order],
            "p_play": p_play[order],
        }
    )
    return DayOutput({"interactions": interactions, **_new_entities(pop, start_us, end_us)}, truth)


def _new_entities(pop: RecsysPopulation, start_us: int, end_us: int) -> dict[str, pd.DataFrame]:
    """Users who signed up and items released in [start, end); day 0 of the world gets all before."""

    def window(appeared: np.ndarray) -> np.ndarray:
        return np.flatnonzero(
            (appeared < end_us) & ((appeared >= start_us) | (start_us == pop.epoch_us))
        )

    u, i = window(pop.user_signup_us), window(pop.item_released_us)
    return {
        "users": pd.DataFrame(
            {
                "user_id": pop.user_ids[u],
                "country": np.array(COUNTRIES, dtype=object)[pop.user_country[u]],
                "signup_at": to_timestamps(pop.user_signup_us[u]),
            }
        ),
        "items": pd.DataFrame(
            {
                "item_id": pop.item_ids[i],
                "genre": np.array(GENRES, dtype=object)[pop.item_genre[i]],
                "released_at": to_timestamps(pop.item_released_us[i]),
                "duration_seconds": pop.item_duration_s[i],
            }
        ),
    }
