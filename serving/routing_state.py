"""The router's routing state (champion, challenger, split, shadow per product), its pure
transitions, and the small JSON file that carries it across restarts."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from serving.names import PRODUCTS, Product
from serving.traffic import Arm, ExperimentMetric

log = logging.getLogger(__name__)
HISTORY_KEEP = 100


class RoutingConflict(Exception):
    """An admin call that does not fit the current state (answered 409 with this message)."""


class Split(BaseModel):
    """Who sees the challenger: an A/B experiment or a canary, by stable hash of the entity."""

    kind: Literal["experiment", "canary"]
    name: str  # the hash salt: an experiment's name, or canary-<product>-v<N>
    metric: ExperimentMetric | None = None  # an experiment's metric
    challenger_percent: float
    started_at: float


class RoutingEvent(BaseModel):
    """One change of routing, kept so the history of which version served when survives."""

    at: float
    action: str
    detail: str = ""
    champion: int | None = None
    challenger: int | None = None


class ProductRouting(BaseModel):
    """How one product's traffic is routed."""

    product: Product
    champion: int | None = None
    challenger: int | None = None
    previous: int | None = None  # the champion before the last promotion (rollback target)
    split: Split | None = None
    shadow: bool = False
    shadow_percent: float = 100.0  # share of the champion's entities whose requests are copied
    history: list[RoutingEvent] = Field(default_factory=list)

    def arm_version(self, arm: Arm) -> int | None:
        return self.champion if arm == "champion" else self.challenger


class RoutingState(BaseModel):
    products: dict[Product, ProductRouting]

    @classmethod
    def empty(cls) -> RoutingState:
        return cls(products={p: ProductRouting(product=p) for p in PRODUCTS})


def _with_event(
    state: ProductRouting, action: str, detail: str = "", **changes: object
) -> ProductRouting:
    updated = state.model_copy(update=changes)
    event = RoutingEvent(
        at=time.time(),
        action=action,
        detail=detail,
        champion=updated.champion,
        challenger=updated.challenger,
    )
    return updated.model_copy(update={"history": [*state.history, event][-HISTORY_KEEP:]})


def _check_challenger(state: ProductRouting, version: int) -> None:
    if state.champion is None:
        raise RoutingConflict(f"{state.product} has no champion to compare a challenger with")
    if version == state.champion:
        raise RoutingConflict(f"v{version} is already the {state.product} champion")


def start_experiment(
    state: ProductRouting, name: str, metric: ExperimentMetric, percent: float, version: int
) -> ProductRouting:
    """An A/B split: `percent` of entities see `version`. Replaces any split (and canary)."""
    _check_challenger(state, version)
    split = Split(
        kind="experiment",
        name=name,
        metric=metric,
        challenger_percent=percent,
        started_at=time.time(),
    )
    return _with_event(
        state,
        "experiment_started",
        f"{name}: {percent:g}% of {state.product} entities on v{version}, judged by {metric}",
        challenger=version,
        split=split,
    )


def stop_split(state: ProductRouting) -> ProductRouting:
    if state.split is None:
        raise RoutingConflict(f"{state.product} has no split running")
    return _with_event(state, f"{state.split.kind}_stopped", state.split.name, split=None)


def start_canary(state: ProductRouting, version: int, percent: float) -> ProductRouting:
    """A canary of `version` at `percent`; its salt names the version, so the same entities are
    in it at every ramp step (assignment is monotone in the percent).

    Never over a running A/B experiment: a canary would end it mid-sample, and the experiment
    is a person's decision while a canary is often a controller's (the reverse is allowed: an
    experiment started by hand replaces a canary, and the controller stands aside)."""
    _check_challenger(state, version)
    if state.split is not None and state.split.kind == "experiment":
        raise RoutingConflict(
            f"{state.product} runs experiment {state.split.name} on v{state.challenger}: a canary "
            "would end it; stop the experiment first"
        )
    split = Split(
        kind="canary",
        name=f"canary-{state.product}-v{version}",
        challenger_percent=percent,
        started_at=time.time(),
    )
    return _with_event(
        state, "canary_started", f"v{version} at {percent:g}%", challenger=version, split=split
    )


def set_canary_percent(state: ProductRouting, percent: float) -> ProductRouting:
    if state.split is None or state.split.kind != "canary":
        raise RoutingConflict(f"{state.product} has no canary running")
    split = state.split.model_copy(update={"challenger_percent": percent})
    return _with_event(
        state,
        "canary_percent",
        f"v{state.challenger} from {state.split.challenger_percent:g}% to {percent:g}%",
        split=split,
    )


def start_shadow(state: ProductRouting, version: int, percent: float = 100.0) -> ProductRouting:
    """Copies of the champion's requests go to `version` too (off the response path): of every
    entity's, or of a sticky `percent` of entities (the challenger often shares the champion's
    model server, whose load a full copy doubles)."""
    _check_challenger(state, version)
    if state.split is not None and state.challenger != version:
        raise RoutingConflict(
            f"{state.product} runs a {state.split.kind} of v{state.challenger}: "
            f"stop it before shadowing v{version}"
        )
    return _with_event(
        state,
        "shadow_started",
        f"v{version} on {percent:g}% of entities",
        challenger=version,
        shadow=True,
        shadow_percent=percent,
    )


def stop_shadow(state: ProductRouting) -> ProductRouting:
    if not state.shadow:
        raise RoutingConflict(f"{state.product} has no shadow running")
    return _with_event(state, "shadow_stopped", f"v{state.challenger}", shadow=False)


def promote(state: ProductRouting, reason: str = "") -> ProductRouting:
    """The challenger becomes champion; the old champion is kept as the rollback target."""
    if state.challenger is None:
        raise RoutingConflict(f"{state.product} has no challenger to promote")
    return _with_event(
        state,
        "promoted",
        f"v{state.challenger} replaces v{state.champion}" + (f": {reason}" if reason else ""),
        champion=state.challenger,
        previous=state.champion,
        challenger=None,
        split=None,
        shadow=False,
    )


RollbackKind = Literal["challenger_withdrawn", "champion_restored"]


def rollback_kind(state: ProductRouting, challenger: int | None = None) -> RollbackKind:
    """What a rollback undoes: a challenger taking traffic (split or shadow) is withdrawn first;
    with none, the champion returns to the previous one.

    `challenger` set: only that challenger may be withdrawn, never a champion restored. A
    rollout controller aborting its own canary must not undo an older promotion when the
    canary has already gone (withdrawn by an operator, or never started), nor end an
    experiment that replaced its canary."""
    in_traffic = state.challenger is not None and (state.split is not None or state.shadow)
    if challenger is not None:
        if not in_traffic or state.challenger != challenger:
            raise RoutingConflict(
                f"v{challenger} is not taking {state.product} traffic; nothing was rolled back"
            )
        if state.split is not None and state.split.kind == "experiment":
            raise RoutingConflict(
                f"v{challenger} is in {state.product} experiment {state.split.name}, not a "
                "canary: the experiment ends when it is stopped; nothing was rolled back"
            )
        return "challenger_withdrawn"
    if in_traffic:
        return "challenger_withdrawn"
    if state.previous is None:
        raise RoutingConflict(
            f"{state.product} has no challenger taking traffic and no previous champion"
        )
    return "champion_restored"


def rollback(
    state: ProductRouting, reason: str = "", challenger: int | None = None
) -> ProductRouting:
    kind = rollback_kind(state, challenger)
    suffix = f": {reason}" if reason else ""
    if kind == "challenger_withdrawn":
        return _with_event(
            state,
            "challenger_withdrawn",
            f"v{state.challenger} taken out of traffic{suffix}",
            challenger=None,
            split=None,
            shadow=False,
        )
    return _with_event(
        state,
        "champion_restored",
        f"v{state.previous} replaces v{state.champion}{suffix}",
        champion=state.previous,
        previous=None,
        challenger=None,
        split=None,
        shadow=False,
    )


def sync_with_registry(state: ProductRouting, aliases: dict[str, int | None]) -> ProductRouting:
    """Adopt the registry's @champion / @challenger / @previous where they are set and differ:
    the registry is the truth for which version is champion. An alias the registry lacks never
    clears ours (a registry that answers nothing must not stop the routing), and a challenger in
    traffic (split or shadow) stays: the admin call that started it also ends it."""
    changes: dict[str, object] = {}
    for alias in ("champion", "previous"):
        version = aliases.get(alias)
        if version is not None and version != getattr(state, alias):
            changes[alias] = version
    challenger = aliases.get("challenger")
    in_traffic = state.split is not None or state.shadow
    if challenger is not None and challenger != state.challenger and not in_traffic:
        changes["challenger"] = challenger
    if "champion" in changes and changes["champion"] == state.challenger:
        # Promoted elsewhere (the CLI, another router): the canary is over.
        changes.update(challenger=None, split=None, shadow=False)
    if not changes:
        return state
    detail = ", ".join(f"{k}={v}" for k, v in changes.items() if k in aliases)
    return _with_event(state, "registry_sync", detail, **changes)


def adopt_discovered_champion(state: ProductRouting, version: int) -> ProductRouting:
    """With no registry and no saved state, the newest version the model server hosts."""
    return _with_event(
        state,
        "discovered",
        f"v{version}: newest version loaded on the model server",
        champion=version,
    )


class RoutingStore:
    """The routing state in memory, written to one JSON file on every change (atomically: a
    crash leaves the old or the new file, never half of one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = self._load()

    def _load(self) -> RoutingState:
        try:
            loaded = RoutingState.model_validate_json(self.path.read_text())
        except FileNotFoundError:
            return RoutingState.empty()
        except (OSError, ValidationError, ValueError) as err:
            log.warning("routing state %s unreadable (%s): starting empty", self.path, err)
            return RoutingState.empty()
        for product in PRODUCTS:
            loaded.products.setdefault(product, ProductRouting(product=product))
        return loaded

    def __getitem__(self, product: Product) -> ProductRouting:
        return self.state.products[product]

    def put(self, routing: ProductRouting) -> None:
        self.state.products[routing.product] = routing
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(self.state.model_dump(mode="json"), indent=1))
        os.replace(partial, self.path)
