"""The on-demand transformations: what only the request knows, set against stored features.

Kept free of Feast so they can be tested (and read) on their own; ``features.definitions``
wraps them in Feast on-demand feature views.
"""

from __future__ import annotations

# The on-demand transformations. Feast stores each one by value (dill) in the registry and runs
# it in "python" mode on a dict of columns: online for one request, offline for a whole training
# frame. So each is self-contained (its imports inside), names its inputs literally, and treats
# None and NaN alike (the online path gives None for a missing value, the offline path may give
# NaN). Feast may rebuild a function from its source text in a bare namespace, so nothing in
# it may refer to a module-level name (not even in an annotation). Python mode rather than
# pandas: a pandas frame per request costs about a millisecond.


def transaction_context(inputs: dict[str, list]) -> dict[str, list]:
    """Amount against the card's mean, foreign country, new device, hour, time since last tx."""
    import math

    def missing(value):
        return value is None or (isinstance(value, float) and math.isnan(value))

    out: dict[str, list] = {
        "amount_over_card_mean": [],
        "is_foreign_country": [],
        "is_new_device": [],
        "hour_of_day": [],
        "seconds_since_last_tx": [],
    }
    for amount, country, device, now, mean, n_30d, home, known, last in zip(
        inputs["amount"],
        inputs["country"],
        inputs["device_id"],
        inputs["event_epoch_s"],
        inputs["card_amount_mean_30d"],
        inputs["card_tx_count_30d"],
        inputs["card_home_country"],
        inputs["card_known_devices"],
        inputs["card_last_tx_epoch_s"],
        strict=True,
    ):
        has_history = not missing(n_30d) and n_30d > 0 and not missing(mean) and mean > 0
        out["amount_over_card_mean"].append(float(amount) / float(mean) if has_history else -1.0)
        out["is_foreign_country"].append(int(not missing(home) and country != home))
        out["is_new_device"].append(int(missing(known) or device not in list(known)))
        out["hour_of_day"].append(int(float(now) // 3600) % 24)
        out["seconds_since_last_tx"].append(
            float(now) - float(last) if not missing(last) and last >= 0 else -1.0
        )
    return out


def listening_context(inputs: dict[str, list]) -> dict[str, list]:
    """The user's affinity for the item's genre, time since the user's last play, item age."""
    import math

    def missing(value):
        return value is None or (isinstance(value, float) and math.isnan(value))

    out: dict[str, list] = {
        "user_genre_affinity_for_item": [],
        "seconds_since_last_play": [],
        "item_age_days": [],
    }
    for i, (now, genre, last_play, released) in enumerate(
        zip(
            inputs["event_epoch_s"],
            inputs["item_genre"],
            inputs["user_last_play_epoch_s"],
            inputs["item_released_epoch_s"],
            strict=True,
        )
    ):
        # One column per genre (user_affinity_<genre>_30d); pick the item's.
        shares = None if missing(genre) else inputs.get("user_affinity_" + str(genre) + "_30d")
        affinity = 0.0 if shares is None or missing(shares[i]) else float(shares[i])
        out["user_genre_affinity_for_item"].append(affinity)
        out["seconds_since_last_play"].append(
            float(now) - float(last_play) if not missing(last_play) and last_play >= 0 else -1.0
        )
        out["item_age_days"].append(
            (float(now) - float(released)) / 86400.0
            if not missing(released) and released >= 0
            else -1.0
        )
    return out


TRANSFORMATIONS = {
    "transaction_context": transaction_context,
    "listening_context": listening_context,
}
