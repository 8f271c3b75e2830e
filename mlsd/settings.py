"""The one typed settings tree of the lab: every knob, its default and why it is there.

Read from the environment (prefix ``MLSD_``, nested fields joined by ``__``, e.g.
``MLSD_SIMULATOR__FRAUD__N_CARDS=2000``) and from an optional ``mlsd.toml`` in the working
directory. This module is a leaf: it imports nothing from the project, so every package may
depend on it without creating a cycle.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Profile = Literal["local", "scale", "k8s"]
World = Literal["fraud", "recsys"]
WORLDS: tuple[World, ...] = ("fraud", "recsys")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FraudWorldSettings(_Section):
    """Size and shape of the simulated card-payments world."""

    n_cards: int = Field(5_000, ge=10, description="Cardholders in the world.")
    n_merchants: int = Field(600, ge=10, description="Merchants in the world.")
    tx_per_card_per_day: float = Field(
        2.0, gt=0, description="Mean legitimate transactions per card per day (Poisson)."
    )
    card_testing_per_day: float = Field(
        4.0,
        ge=0,
        description="Mean card-testing attacks per day per 10k cards (bursts of small amounts).",
    )
    account_takeovers_per_day: float = Field(
        16.0,
        ge=0,
        description="Mean account takeovers per day per 10k cards (new device, abroad, large).",
    )
    compromised_merchant_share: float = Field(
        0.01, ge=0, le=0.2, description="Share of merchants whose customers' cards get defrauded."
    )
    compromised_merchant_fraud_prob: float = Field(
        0.08, ge=0, le=1, description="Chance a transaction at a compromised merchant is fraud."
    )
    chargeback_share: float = Field(
        0.97, ge=0, le=1, description="Share of frauds that are ever reported as a chargeback."
    )
    chargeback_delay_days_mean: float = Field(
        10.0, gt=0, description="Mean delay from a fraud to its chargeback (days, >= 1 day)."
    )


class RecsysWorldSettings(_Section):
    """Size and shape of the simulated music-listening world."""

    n_users: int = Field(3_000, ge=10, description="Listeners present on day 0.")
    n_items: int = Field(2_000, ge=10, description="Items in the back catalogue on day 0.")
    new_users_per_day: int = Field(15, ge=0, description="Listeners who sign up each day.")
    new_items_per_day: int = Field(10, ge=0, description="Items released each day.")
    latent_dim: int = Field(
        8, ge=2, le=64, description="Dimension of hidden tastes and item factors."
    )
    sessions_per_user_per_day: float = Field(
        0.4, gt=0, description="Mean listening sessions per user per day (Poisson)."
    )
    slate_size: int = Field(
        10, ge=1, le=50, description="Items shown per session (positions 0..n-1)."
    )
    popularity_exponent: float = Field(
        1.1, gt=0, description="Zipf exponent of item popularity (power law)."
    )


class SimulatorSettings(_Section):
    """Where and when the simulated worlds start."""

    seed: int = Field(7, description="Default seed; the same seed always gives the same data.")
    start_date: dt.date = Field(dt.date(2026, 1, 1), description="First simulated day.")
    days: int = Field(
        40,
        ge=1,
        description="Default number of simulated days per run (training needs > 26 with labels).",
    )
    fraud: FraudWorldSettings = FraudWorldSettings()
    recsys: RecsysWorldSettings = RecsysWorldSettings()


class IngestSettings(_Section):
    """The quality gate between landed raw batches and the offline store."""

    fail_on_quarantine: bool = Field(
        True, description="`mlsd ingest` exits non-zero when any batch was quarantined."
    )


class RedisSettings(_Section):
    """Where the Redis online store listens (profiles scale and k8s)."""

    host: str = Field("127.0.0.1", description="Redis host of the online store.")
    port: int = Field(6379, ge=1, le=65535, description="Redis port of the online store.")
    db: int = Field(0, ge=0, description="Redis database number of the online store.")


class FeatureStoreSettings(_Section):
    """The Feast feature store: backends and the cadence of the batch features."""

    project: str = Field(
        "mlsd", pattern=r"^[a-z][a-z0-9_]*$", description="Feast project name (registry namespace)."
    )
    online_store: Literal["auto", "sqlite", "redis"] = Field(
        "auto",
        description="Online store; auto: sqlite for the local profile, redis for scale and k8s.",
    )
    redis: RedisSettings = RedisSettings()
    registry_cache_ttl_seconds: int = Field(
        0,
        ge=0,
        description="How long a process trusts its copy of the registry; 0 loads it once "
        "(definitions change only on `mlsd features apply`, and a refresh stalls a request).",
    )
    merchant_risk_refresh_hours: int = Field(
        24,
        ge=1,
        le=24 * 7,
        description="Cadence of the merchant-risk batch snapshot (hours, UTC-aligned).",
    )
    recsys_refresh_hours: int = Field(
        24,
        ge=1,
        le=24 * 7,
        description="Cadence of the user and item batch snapshots (hours, UTC-aligned).",
    )
    training_engine: Literal["asof", "feast"] = Field(
        "asof",
        description="Point-in-time join of training frames: asof (pandas merge_asof over the "
        "feature tables, then Feast's on-demand transforms) or feast (Feast's "
        "get_historical_features; same answer, tested, but its parquet store pairs every entity "
        "row with every feature row of the entity, so it is slow past a few thousand rows).",
    )
    training_join_budget_rows: int = Field(
        4_000_000,
        ge=10_000,
        description="Rows Feast's parquet offline store may hold at once in a point-in-time join "
        "(entity rows x feature rows per entity); larger training frames are joined in chunks.",
    )


class MlflowSettings(_Section):
    """The MLflow tracking server and model registry of the local stack."""

    port: int = Field(5000, ge=1, le=65535, description="Port of the MLflow server.")
    workers: int = Field(
        1,
        ge=1,
        le=16,
        description="Server worker processes; each holds about 260 MB, one is plenty for a lab.",
    )
    backend_store_uri: str | None = Field(
        None,
        description="Tracking and registry database; unset: SQLite under data_dir/mlflow "
        "(profile local). Profile scale sets a PostgreSQL URI (postgresql://user:pw@host/db).",
    )


class PrefectSettings(_Section):
    """The Prefect orchestration server of the local stack."""

    port: int = Field(4200, ge=1, le=65535, description="Port of the Prefect server (API and UI).")
    ui_enabled: bool = Field(True, description="Serve the Prefect UI beside the API.")
    database_url: str | None = Field(
        None,
        description="Prefect's database; unset: SQLite under data_dir/prefect (profile local). "
        "Profile scale sets a PostgreSQL URL (postgresql+asyncpg://user:pw@host/db).",
    )
    runner_poll_seconds: int = Field(
        2,
        ge=1,
        le=60,
        description="How often the flows process asks Prefect for runs to start (Prefect's "
        "default, 10 s, delayed each retrain and each rollout by up to 10 s).",
    )
    schedule_ahead_seconds: int = Field(
        300,
        ge=60,
        description="How far ahead Prefect's scheduler creates the runs of a deployment on an "
        "interval (Prefect's default, an hour, is 60 monitor runs each): runs created ahead "
        "outlive a stopped lab, and all of them are due at once when it starts again.",
    )
    flows_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU niceness of the stack's flows process and the flow runs it starts "
        "(landing, monitoring, training, rollout): on 2 cores, batch work that competes with "
        "serving at equal priority pushes the answers' p99 past a canary's latency guardrail.",
    )
    client_max_retries: int = Field(
        6,
        ge=0,
        le=10,
        description="How often the lab's Prefect clients retry a call the server answered 503 "
        "(its database busy) or 429, 2, 4, 8 ... s apart (PREFECT_CLIENT_MAX_RETRIES). Six ride "
        "out one SQLite lock of up to its busy timeout, 60 s (seen about once in ten demos: "
        "PrefectHQ/prefect#18934); Prefect's default of five gave up after 62 s and ended a demo.",
    )


class WorldSettings(_Section):
    """The world on a clock (stack component `world`): simulated time, live traffic to the
    router, late labels to /v1/feedback, each closed simulated day landed as raw batches."""

    port: int = Field(
        8090,
        ge=1,
        le=65535,
        description="Port of the world's control API (it binds to bind_host, like the router).",
    )
    router_url: str | None = Field(
        None,
        description="Base URL of the router the world sends requests and labels to; unset: "
        "router.port on client_host (the local stack). On a cluster: the router's Service.",
    )
    seconds_per_day: float = Field(
        40.0,
        gt=0,
        description="Wall-clock seconds one simulated day lasts: at 40 s, a chargeback ten "
        "simulated days late reaches the platform 400 s after its transaction. A day must last "
        "longer than landing it does (gate, features, materialisation): measured on 2 cores "
        "under the lab's load, 33 s per demo day; at 20 s the online store fell days behind "
        "the world, and the features served (time since the card's last payment, its 1 h to "
        "7 d counts) drifted from those trained on in every window.",
    )
    fraud_rps: float = Field(
        40.0,
        ge=0,
        le=500,
        description="Mean fraud requests per second `mlsd traffic start` sends when no --rps is "
        "given (a sample of the day's transactions, sent at their simulated time). At 25 % of "
        "40 req/s a canary step gathers router.canary.min_requests (200) in about 20 s, at 5 % "
        "in 100 s (rollout.max_step_seconds is sized to the slower). Measured on 2 cores: at 60 req/s and their "
        "labels the world process takes 17-21 % of a core (through httpx it took up to a whole "
        "one, and its control API stopped answering).",
    )
    recs_rps: float = Field(
        5.0,
        ge=0,
        le=500,
        description="Mean recommendation requests per second (a sample of the day's sessions).",
    )
    start_traffic: bool = Field(
        False, description="Send live traffic from the moment the world starts (else: stopped)."
    )
    legit_label_after_days: float = Field(
        12.0,
        gt=0,
        description="A sent transaction with no chargeback this many simulated days later is "
        "reported legitimate (label 0) to /v1/feedback: how an issuer learns a payment was fine.",
    )
    land_days: bool = Field(
        True,
        description="Land each closed simulated day as raw batches (and emit mlsd.batch.landed).",
    )
    request_timeout_seconds: float = Field(
        5.0, gt=0, description="How long the world waits for one answer of the router."
    )
    max_in_flight: int = Field(
        32, ge=1, description="Requests the world has open at once (open loop up to this)."
    )


class RolloutSettings(_Section):
    """How the rollout flow that a registered challenger starts by itself (the
    `rollout` deployment) ramps it: a shadow window, then the canary steps."""

    shadow_seconds: float = Field(
        20.0,
        ge=0,
        description="Least time of the shadow before the canary: the challenger answers copies "
        "of every request (callers see the champion's answers only), judged by the canary's "
        "guardrails but latency; a breach rolls back before any caller saw one of its answers, "
        "and no promote verdict by max_step_seconds rolls back too. 0 skips the shadow. Its "
        "evidence costs no caller anything, so it gathers more than a step's minimum: at 35 "
        "req/s, 20 s is about 700 copies an arm, enough to see a challenger that blocks 7 % "
        "against 1 % (alert-rate margin 0.03, alpha 0.01) about 7 times in 10, where 200 (the "
        "minimum, 5 s) see it 2 times in 10 (normal approximation; measured: a bad model passed "
        "a 5 s shadow and its canary in one of four demos).",
    )
    steps: tuple[float, ...] = Field(
        (25.0, 50.0, 100.0),
        description="Canary ramp in percent of entities after the shadow passed; the last (100) "
        "is the promotion. A step gathers router.canary.min_requests per arm in min_requests / "
        "(rate x percent / 100) s: 20 s at 25 % of 40 req/s, 100 s at 5 % (measured: 111 s of "
        "the demo's 319 s from injection to promotion). A 5 % first step was there so a bad "
        "challenger answered at most 5 % of traffic; the judged shadow now catches one that "
        "errs or scores unlike both models before it answers anybody. What it cannot see, "
        "latency on the serving path, the first step judges. Without a shadow, start small.",
    )
    min_step_seconds: float = Field(
        4.0, gt=0, description="Least time a step lasts before a promote verdict moves it on."
    )
    max_step_seconds: float = Field(
        150.0,
        gt=0,
        description="Deadline of a step (and of the shadow): no promote verdict by then rolls "
        "back. Size it from the "
        "traffic: a step at s % of R req/s gathers router.canary.min_requests in "
        "min_requests / (R * s / 100) s, 100 s at 5 % of 40 req/s (measured: at 5 % of 20 req/s, "
        "39 requests in 40 s, so a deadline of 40 s with 200 needed rolled back every good "
        "retrain).",
    )
    poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often the verdict is read: the bound on breach-to-rollback latency "
        "(target <= 10 s).",
    )

    @model_validator(mode="after")
    def _shadow_within_the_deadline(self) -> RolloutSettings:
        # Checked here, not first in each rollout run the deployment starts (serving.rollout).
        if self.shadow_seconds > self.max_step_seconds:
            raise ValueError(
                f"rollout.shadow_seconds ({self.shadow_seconds:g}) must not exceed "
                f"rollout.max_step_seconds ({self.max_step_seconds:g}), the shadow's deadline"
            )
        return self


class StackSettings(_Section):
    """How `mlsd up` supervises the local stack's processes."""

    health_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="How long `mlsd up` waits for a component to answer its health check "
        "(MLflow's first start, with migrations: ~16 s on 2 cores; ~45 s without bytecode).",
    )
    max_restarts: int = Field(
        3, ge=0, description="Times the watchdog restarts a crashed component before giving up."
    )
    restart_backoff_seconds: float = Field(
        2.0, ge=0, description="Wait before the first restart; doubled for each further restart."
    )
    restart_backoff_max_seconds: float = Field(
        60.0, ge=0, description="Upper bound of the wait before a restart."
    )
    watchdog_poll_seconds: float = Field(
        2.0, gt=0, description="How often the watchdog checks that each component is alive."
    )
    stop_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="`mlsd down` sends SIGTERM, then SIGKILL to what is left after this long.",
    )


class ProductServerSettings(_Section):
    """One product's model server: its ports and how long its callers should wait for it."""

    http_port: int = Field(ge=1, le=65535, description="REST port (V1 and V2 protocols).")
    grpc_port: int = Field(
        ge=1, le=65535, description="gRPC port (V2 protocol); used only when grpc_enabled."
    )
    timeout_ms: float = Field(
        gt=0,
        description="Hint for callers (the router): how long to wait for one answer before "
        "degrading to the fallback. The server itself never cuts a request short.",
    )
    shadow_http_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="REST port of a second model server for this product's shadow copies (the "
        "router loads the shadowed version there), so the answering model server runs no "
        "second inference. Unset: shadows go to the product's own server.",
    )
    shadow_grpc_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="gRPC port of the shadow server (when grpc_enabled); needed with "
        "shadow_http_port.",
    )

    @model_validator(mode="after")
    def _shadow_ports_together(self) -> ProductServerSettings:
        if (self.shadow_http_port is None) != (self.shadow_grpc_port is None):
            raise ValueError("set shadow_http_port and shadow_grpc_port together")
        return self

    def ports(self, shadow: bool = False) -> tuple[int, int]:
        """(REST, gRPC) ports of the product's model server, or of its shadow server."""
        if not shadow:
            return self.http_port, self.grpc_port
        if self.shadow_http_port is None or self.shadow_grpc_port is None:
            raise ValueError("this product has no shadow server (shadow_http_port is unset)")
        return self.shadow_http_port, self.shadow_grpc_port


class ModelServerSettings(_Section):
    """The KServe model servers: one process per product, hosting pinned registry versions;
    fraud also has a shadow server by default, so the answering server runs no second inference
    for each shadowed request; it runs at a low CPU priority (shadow_nice, shadow_sched_idle)
    and takes the copies in batches (router.shadow_batch_max). What a shadow adds to the
    answers' p99: `make bench` (benchmarks/results/router.json; docs/inference-contract.md has
    the arrangements measured before). The recommender's shadow shares its server unless
    recsys.shadow_http_port is set (one more process, ~0.4 GB)."""

    fraud: ProductServerSettings = ProductServerSettings(
        http_port=8081,
        grpc_port=9081,
        timeout_ms=50.0,
        shadow_http_port=8083,
        shadow_grpc_port=9083,
    )
    recsys: ProductServerSettings = ProductServerSettings(
        http_port=8082, grpc_port=9082, timeout_ms=250.0
    )
    shadow_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority the shadow servers run at (Unix nice; 0 = the answering "
        "servers' own). A shadow is best effort: on shared cores it must yield to the answers "
        "(at nice 0 on 2 cores, a full shadow stalled the serving server past its budget; "
        "docs/inference-contract.md). On Kubernetes, the shadow pod's lower CPU request and "
        "priority class play this part.",
    )
    shadow_sched_idle: bool = Field(
        True,
        description="Also run the shadow servers under Linux's SCHED_IDLE policy: a core only "
        "when nothing else wants it, given back the moment an answering process wakes (a "
        "niced process keeps it for the rest of its time slice). Elsewhere only the nice "
        "applies. Under a load that fills the cores, shadow copies then wait, fill the queue "
        "and are dropped and counted: a shadow is best effort.",
    )
    grpc_enabled: bool = Field(
        False,
        description="Also serve gRPC. Off: the router speaks REST, and KServe's gRPC server "
        "binds every interface ([::]) whatever bind_host says.",
    )
    access_log: bool = Field(
        False,
        description="Log one line per request (uvicorn's access log and KServe's step timings); "
        "off keeps the per-request path lean, the router logs every prediction anyway.",
    )
    cached_views: list[str] = Field(
        default_factory=lambda: ["item_stats"],
        description="Feature views whose online rows a model server may reuse for "
        "feature_cache_ttl_s: the recommender reads the same ~100 candidates' item features for "
        "every request, and they change only when materialised.",
    )
    feature_cache_ttl_s: float = Field(
        30.0,
        ge=0,
        description="How long a cached online row (cached_views) is reused: the most a served "
        "feature may lag the online store. 0 reads the store every time.",
    )

    def product(self, name: str) -> ProductServerSettings:
        """The settings of one product's server (`fraud` or `recsys`)."""
        if name not in ("fraud", "recsys"):
            raise KeyError(f"no model server for {name!r}; known: fraud, recsys")
        section: ProductServerSettings = getattr(self, name)
        return section


class FraudTrainingSettings(_Section):
    """How the fraud model is trained, judged and gated."""

    stored_features_as_of: Literal["payment", "day_start"] = Field(
        "day_start",
        description="The instant a training row's stored features are read as of. The lab's "
        "features reach the online store by daily batch, so a payment is scored with them as "
        "of its day's start at best: `day_start` trains on that (the request's own fields and "
        "clock still at the payment). `payment` reads them at the payment itself, as a "
        "streaming pipeline would serve them: measured on the demo's world, that skew drifted "
        "the time since the card's last payment (PSI 0.27) and its 1 h count (0.16) in every "
        "window.",
    )
    landing_delay_days: float = Field(
        0.3,
        ge=0,
        description="With `day_start`: how long after a day closes its features reach the "
        "online store, in simulated days (landing: gate, features, materialisation). A payment "
        "earlier in its day than this is served the day before's features, and is trained so. "
        "Measured under the demo's acts on 2 cores (40 s a day; a landing run starts 2-3 s after "
        "its day closes and takes 7-10 s): the day's features were online 0.2-0.31 of a day "
        "after it closed (from the landing runs' times and from the served rows). At the 0.75 measured when a landing run took 16-32 s, "
        "`seconds_since_last_tx` drifted in every window (0.19-0.25 of a standard deviation).",
    )

    label_maturity_days: float = Field(
        12.0,
        ge=0,
        description="Transactions younger than this (at the data's end) are not used: their "
        "chargebacks may still come (about 70% of frauds are reported within 12 days).",
    )
    retrain_label_maturity_days: float = Field(
        1.0,
        ge=0,
        description="Label maturity of a retrain the loop starts (on mlsd.retrain.requested): "
        "the gate must judge on the recent, drifted days, whose late chargebacks are still "
        "arriving, so both champion and challenger are judged on the same young labels.",
    )
    calibrate_days: float = Field(
        4.0, gt=0, description="Window after training for calibration and the threshold."
    )
    validate_days: float = Field(5.0, gt=0, description="Last window, for metrics and the gate.")
    negative_sample_rate: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Share of legitimate training rows kept (every fraud is kept).",
    )
    positive_weight: float = Field(
        5.0, gt=0, description="Weight of a fraud row in gradient boosting."
    )
    false_alarm_cost: float = Field(
        5.0, ge=0, description="Cost model: USD lost per legitimate transaction flagged (friction)."
    )
    gate_margin: float = Field(
        0.01,
        ge=0,
        description="A challenger may trail the champion's PR-AUC by at most this, unless the "
        "paired bootstrap interval of the delta reaches it (then the trailing is noise).",
    )
    gate_confidence: float = Field(
        0.9,
        gt=0.5,
        lt=1,
        description="Confidence of the gate's paired bootstrap interval of the PR-AUC delta: a "
        "candidate is refused for trailing only when the whole interval lies beyond the margin.",
    )
    min_lift_over_base_rate: float = Field(
        3.0, ge=1, description="Floor: PR-AUC must be at least this many times the positive rate."
    )


class RecsysTrainingSettings(_Section):
    """How the recommender is trained, judged and gated."""

    validate_days: float = Field(7.0, gt=0, description="Last window, for metrics and the gate.")
    ranker_days: float = Field(
        7.0, gt=0, description="Window before validation whose impressions train the ranker."
    )
    factors: int = Field(16, ge=2, le=256, description="Embedding size of the retrieval towers.")
    als_iterations: int = Field(10, ge=1, description="Alternating least squares sweeps.")
    candidates: int = Field(100, ge=10, description="Candidates retrieval hands to the ranker.")
    eval_users: int = Field(1000, ge=50, description="Users sampled for offline ranking metrics.")
    gate_margin: float = Field(
        0.01, ge=0, description="A challenger may trail the champion's NDCG@10 by at most this."
    )


class TrainingSettings(_Section):
    """Training flows and the registration gate."""

    fraud_model_name: str = Field("fraud", description="Registered model name of the fraud scorer.")
    recsys_model_name: str = Field(
        "recsys", description="Registered model name of the recommender."
    )
    experiment: str = Field("mlsd-lab", description="MLflow experiment the training runs go to.")
    deployment_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="A training run the lab's flows process started (from its deployment) "
        "lowers its CPU priority by this, so on a small machine the day's landing, the world "
        "and serving go first: measured under the demo's acts, a day took 38 s to land "
        "(median, up to 94 s) against a 40 s day, and the online store fell 1-3 days behind. "
        "`mlsd train` in a terminal keeps the person's priority.",
    )
    fraud: FraudTrainingSettings = FraudTrainingSettings()
    recsys: RecsysTrainingSettings = RecsysTrainingSettings()

    def model_name(self, product: str) -> str:
        """The registered model name of a product (`fraud` or `recsys`)."""
        if product not in WORLDS:
            raise KeyError(f"no registered model for {product!r}; known: {', '.join(WORLDS)}")
        return self.fraud_model_name if product == "fraud" else self.recsys_model_name

    def model_names(self) -> dict[str, str]:
        """{product: registered model name} for every product."""
        return {p: self.model_name(p) for p in WORLDS}


class SqlitePredictionLogSettings(_Section):
    """The prediction log in one SQLite file in WAL mode (profile local)."""

    type: Literal["sqlite"] = Field("sqlite", description="Selects this implementation.")
    path: Path | None = Field(
        None, description="Database file; unset: <data_dir>/router/predictions.db."
    )
    busy_timeout_ms: int = Field(
        5_000, ge=0, description="How long a write waits for another process's lock (ms)."
    )


class PostgresPredictionLogSettings(_Section):
    """The prediction log in PostgreSQL (profiles scale and k8s), through asyncpg."""

    type: Literal["postgres"] = Field("postgres", description="Selects this implementation.")
    dsn: str = Field(
        "postgresql://mlsd@127.0.0.1:5432/mlsd",
        description="Connection string (postgresql://user:pw@host:port/db).",
    )
    pool_size: int = Field(4, ge=1, le=64, description="Connections the router keeps open.")


class CanaryGuardrailSettings(_Section):
    """The guardrails `serving.canary.canary_verdict` judges a canary step by (same window for
    both arms; a breach rolls back at once, too little evidence holds)."""

    min_requests: int = Field(
        200,
        ge=1,
        description="Requests each arm needs in the window before a step may pass. Sized for the "
        "alert-rate guardrail: a challenger blocking 10 % against 0.7 % breaches it (margin "
        "0.03, alpha 0.01) from about 150 requests on (at 100, z is about 2.3, p 0.011). Measured: "
        "with 60 needed (an old override of the demo's), the bad-model drill passed its 5 % "
        "step in both of two demos, and was promoted in one.",
    )
    alpha: float = Field(
        0.01, gt=0, lt=0.5, description="Significance level of every one-sided test below."
    )
    error_rate_margin: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Breach when the challenger's error rate exceeds the champion's by more "
        "than this, significantly (Agresti-Caffo two-proportion z-test).",
    )
    p99_ratio: float = Field(
        1.5,
        ge=1,
        description="Breach when the challenger's p99 latency exceeds the champion's "
        "times this and by more than p99_slack_ms, significantly: its share of requests above "
        "that bar exceeds the champion's by more than 1 % (Agresti-Caffo z-test at alpha).",
    )
    p99_slack_ms: float = Field(
        10.0, ge=0, description="Latency difference always tolerated (ms): jitter of a lab."
    )
    p99_ceiling_ms: float = Field(
        500.0,
        gt=0,
        description="Breach when the challenger's p99 latency exceeds this (ms) while the "
        "champion's does not (significantly, as for p99_ratio).",
    )
    min_latency_samples: int = Field(
        100, ge=1, description="Requests per arm below which p99 is not judged (too noisy)."
    )
    psi_threshold: float = Field(
        0.25,
        gt=0,
        description="Breach when the score PSI (champion-quantile bins) reaches this and the "
        "two-sample KS test also rejects at alpha.",
    )
    psi_bins: int = Field(10, ge=2, le=100, description="Quantile bins of the PSI.")
    alert_rate_margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Breach when the share of the challenger's answers that block exceeds the "
        "champion's by more than this, significantly (Agresti-Caffo two-proportion z-test): "
        "a retrain for drift may block a little more or less, not ten times as often.",
    )
    min_scores: int = Field(
        50, ge=2, description="Scores per arm below which the distribution is not judged."
    )
    quality_margin: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Breach when the challenger's labelled precision or recall trails the "
        "champion's by more than this, significantly (Agresti-Caffo two-proportion z-test).",
    )
    min_labelled: int = Field(
        30,
        ge=1,
        description="Labelled predictions (per arm and metric denominator) below which "
        "precision / recall is not judged.",
    )
    require_labels: bool = Field(
        False,
        description="Hold (instead of pass) a step whose precision / recall could not be judged "
        "for lack of labels (fraud labels arrive days later).",
    )


class RouterSettings(_Section):
    """The serving router: public scoring API, traffic policies, fallbacks, the prediction log."""

    port: int = Field(
        8080, ge=1, le=65535, description="Port of the router (it binds to bind_host)."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the /admin API; unset: generated at first start and kept "
        "in <data_dir>/router/admin-token (mode 600). Never logged.",
    )
    fraud_upstream: str | None = Field(
        None,
        description="Base URL of the fraud model server (KServe V2); unset: "
        "model_servers.fraud.http_port on client_host.",
    )
    recsys_upstream: str | None = Field(
        None,
        description="Base URL of the recsys model server (KServe V2); unset: "
        "model_servers.recsys.http_port on client_host.",
    )
    fraud_shadow_upstream: str | None = Field(
        None,
        description="Base URL of a second fraud model server for shadow copies; unset: "
        "model_servers.fraud.shadow_http_port when set (and fraud_upstream is not), else the "
        "fraud model server itself.",
    )
    recsys_shadow_upstream: str | None = Field(
        None,
        description="Base URL of a second recsys model server for shadow copies; unset: "
        "model_servers.recsys.shadow_http_port when set (and recsys_upstream is not), else the "
        "recsys model server itself.",
    )
    registry_uri: str | None = Field(
        None,
        description="MLflow tracking URI for alias moves (promote / rollback) and the initial "
        "champion; unset: MLFLOW_TRACKING_URI if set; empty: no registry (the router keeps its "
        "routing state alone).",
    )
    model_timeout_ms: float | None = Field(
        None,
        gt=0,
        description="Budget of the call to the routed model version (ms); unset: the "
        "product's model_servers.<product>.timeout_ms.",
    )
    fallback_model_timeout_ms: float | None = Field(
        None,
        gt=0,
        description="Budget of the call to the fallback model version (ms); unset: as "
        "model_timeout_ms.",
    )
    features_timeout_ms: float = Field(
        150.0,
        gt=0,
        description="Budget of the online-feature lookup of the rule-based fraud fallback (ms).",
    )
    load_timeout_seconds: float = Field(
        120.0, gt=0, description="How long a V2 repository load of a new version may take."
    )
    breaker_window: int = Field(
        50, ge=1, description="Recent calls per model version the circuit breaker judges."
    )
    breaker_min_calls: int = Field(
        20, ge=1, description="Calls in the window before the circuit may open."
    )
    breaker_failure_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of failed calls in the window that opens the circuit: the version is "
        "skipped, so a dead or hung model costs no time budget per request (a few timeouts of "
        "a busy one do not).",
    )
    breaker_cooldown_seconds: float = Field(
        5.0, gt=0, description="How long an open circuit skips its model before one trial call."
    )
    breaker_min_failing_seconds: float = Field(
        1.0,
        ge=0,
        description="How long failures must go on before the circuit opens: a model that is "
        "down fails for longer; a stall of a few hundred ms (a busy 2-core machine) times out "
        "a window's worth of calls at 100 req/s, and opening on it would skip a working "
        "model for the whole cooldown.",
    )
    max_body_bytes: int = Field(
        16_384, ge=256, description="Largest request body accepted; larger gets 413."
    )
    max_upstream_response_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1_024,
        description="Largest answer read from a model server (status line, headers and body). "
        "A longer one is a failed hop (bad_response, the fallback answers) and its connection "
        "is closed at the cap, so a broken server cannot fill the router's memory. The largest "
        "legitimate answer, a shadow batch of 1,024 slates of 100 items, is about 3.7 MB.",
    )
    shadow_queue_size: int = Field(
        1_000, ge=1, description="Shadow copies waiting for a worker; when full, drop and count."
    )
    shadow_workers: int = Field(
        4, ge=1, le=256, description="Shadow calls (batches of copies) in flight at once."
    )
    shadow_batch_max: int = Field(
        64,
        ge=1,
        le=1_024,
        description="Most copies sent in one shadow call (one V2 request of that many rows).",
    )
    shadow_linger_ms: float = Field(
        200.0,
        ge=0,
        le=10_000,
        description="How long a batch waits for more copies after its first (ms). Larger "
        "batches cost the shared cores less per copy; a copy's answer is only logged, so the "
        "wait delays nothing a caller sees.",
    )
    shadow_timeout_ms: float = Field(
        1_000.0, gt=0, description="Budget of one shadow call (ms); it is off the request path."
    )
    log_batch_size: int = Field(
        500, ge=1, description="Prediction-log rows written per batch (flush when reached)."
    )
    log_flush_ms: float = Field(
        200.0, gt=0, description="Longest a logged row waits before its batch is written (ms)."
    )
    log_queue_size: int = Field(
        200_000,
        ge=1,
        description="Rows waiting for the log writer; beyond this rows are dropped and counted "
        "(the writer is down or far behind).",
    )
    log_journal: bool = Field(
        True,
        description="Append each logged row to a local journal before its answer leaves, and "
        "replay it at start: a killed router (SIGKILL, OOM) then loses no acknowledged row. "
        "Off: a kill loses the rows still queued (up to one flush interval's).",
    )
    prediction_log: SqlitePredictionLogSettings | PostgresPredictionLogSettings = Field(
        default_factory=SqlitePredictionLogSettings,
        discriminator="type",
        description="Where every prediction and label goes (sqlite or postgres).",
    )
    rule_block_threshold: float = Field(
        0.5, ge=0, le=1, description="Rule-based fallback blocks at or above this score."
    )
    request_only_amount_usd: float = Field(
        1_000.0,
        gt=0,
        description="Last-resort fraud fallback (no model, no features): amounts above this "
        "score as suspicious.",
    )
    fallback_online_features: bool = Field(
        True,
        description="The rule fallback looks up online features (Feast, imported in the "
        "background at start); off: it scores from the request alone.",
    )
    popularity_refresh_seconds: float = Field(
        300.0,
        gt=0,
        description="How often the recsys popularity fallback is refreshed from the model "
        "server's cold-start answer.",
    )
    canary: CanaryGuardrailSettings = CanaryGuardrailSettings()


class DriftSettings(_Section):
    """How a window's drift is measured with Evidently (method and threshold per column type)."""

    num_method: str = Field(
        "wasserstein",
        description="Evidently drift method for numeric inputs: the Wasserstein distance normed "
        "by the reference's standard deviation (Evidently's PSI uses equal-width bins, blind to "
        "shifts of heavy-tailed inputs; see monitoring/drift.py). PSI per input is shown beside.",
    )
    num_threshold: float = Field(
        0.1, gt=0, description="A numeric input drifts when its method's score is at or above this."
    )
    cat_method: str = Field(
        "psi", description="Evidently drift method for categorical inputs (PSI over categories)."
    )
    cat_threshold: float = Field(
        0.2,
        gt=0,
        description="A categorical input drifts when its method's score is at or above this.",
    )
    score_method: str = Field(
        "psi", description="Evidently method for the model's score (ValueDrift on `score`)."
    )
    score_threshold: float = Field(
        0.2, gt=0, description="The score drifts when its method's score is at or above this."
    )
    max_rows: int = Field(
        20_000,
        ge=100,
        description="Rows of a window (and of the reference) Evidently sees: a larger window is "
        "sampled down to this, with a fixed seed, so a 100,000-row window is judged in seconds.",
    )


class TriggerSettings(_Section):
    """The retrain trigger: when window verdicts become a retrain (monitoring.trigger)."""

    drifted_share: float = Field(
        0.15,
        gt=0,
        le=1,
        description="Input drift: at least this share of the model's inputs drifted in a window "
        "(fraud has 21 inputs: 0.15 is 4 of them). Measured in the demo (2 cores, 40 fraud "
        "req/s), with no scenario: none of the 21 drifted once training read the store's lag "
        "as measured (training.fraud.landing_delay_days), one (`seconds_since_last_tx`) while a "
        "quarantined day held the store a day behind; before, one drifted in every window, and "
        "the bar was 0.2 (5 of 21), 4 above it. "
        "amount-inflation moves the amount and its ratio to the card's mean at once, the 1 h "
        "and 24 h amount sums once a drifted day has landed, the 7 d sum a day later.",
    )
    score_psi: float = Field(
        0.2, gt=0, description="Score drift: the score's PSI in a window is at or above this."
    )
    pr_auc_drop: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Performance drop: the labelled PR-AUC of a window is below the champion's "
        "own validation PR-AUC by at least this share of it.",
    )
    min_labelled_rows: int = Field(
        200, ge=1, description="Labelled rows a window needs before its PR-AUC is judged."
    )
    min_labelled_positives: int = Field(
        5, ge=1, description="Labelled frauds a window needs before its PR-AUC is judged."
    )
    m: int = Field(2, ge=1, description="M of N: windows with a signal among the last N judged.")
    n: int = Field(3, ge=1, description="M of N: how many of the latest judged windows count.")
    cooldown_seconds: float = Field(
        300.0,
        ge=0,
        description="After a retrain request, further signals are suppressed for this long.",
    )

    @model_validator(mode="after")
    def _m_within_n(self) -> TriggerSettings:
        if self.m > self.n:
            raise ValueError(f"trigger.m ({self.m}) must not exceed trigger.n ({self.n})")
        return self


class MonitoringSettings(_Section):
    """Monitoring of the served models over windows of the prediction log."""

    window_seconds: float = Field(
        120.0,
        gt=0,
        description="A window is the prediction log's last this many seconds: a whole number "
        "of simulated days (world.seconds_per_day; 3 by default), or the hours of the part day "
        "weigh twice and the hour of day reads as drifted.",
    )
    min_rows: int = Field(
        500,
        ge=1,
        description="A fraud window with fewer served rows says 'not enough data' and decides "
        "nothing.",
    )
    recsys_min_rows: int = Field(
        150,
        ge=1,
        description="The same for a recommender window, in slates served. Lower than the fraud "
        "bar because a recommender window is judged on click-through by arm and its scores' "
        "quality, not on 21 inputs' distributions; and the world sends 8 times fewer slates "
        "than payments: at 5 req/s a demo's 40 s window holds about 200 champion slates (at the "
        "fraud bar of 500, no recommender window was ever judged in a demo; an A/B split "
        "leaves the champion its share of them).",
    )
    min_coverage: float = Field(
        0.9,
        gt=0,
        le=1,
        description="A window whose served rows span less than this share of it (traffic that "
        "started, or a version that took over, within it) says 'not enough data' too: it holds "
        "part of a simulated day only.",
    )
    interval_seconds: float = Field(
        60.0, gt=0, description="How often the monitoring deployments judge a window."
    )
    reference_rows: int = Field(
        5_000,
        ge=100,
        description="Rows logged with a model version as its reference (MLflow artifact "
        "reference/reference.parquet), drawn from its data's latest `reference_days`.",
    )
    reference_days: float = Field(
        3.0,
        gt=0,
        description="A version's reference is drawn from the last this many days of the data "
        "it was trained on (labelled or not): the windows it will judge come after them. "
        "Drawn from its calibration and validation windows instead (days 19-28 of the demo's "
        "40), 0.19 of the inputs read as drifted with no scenario at all.",
    )
    evidently_port: int = Field(
        8086,
        ge=1,
        le=65535,
        description="Port of Evidently's own UI over the monitoring workspace (`mlsd ui evidently`).",
    )
    drift: DriftSettings = DriftSettings()
    trigger: TriggerSettings = TriggerSettings()

    def min_rows_for(self, product: str) -> int:
        """The served rows (payments, slates) a window of `product` needs to be judged."""
        return self.recsys_min_rows if product == "recsys" else self.min_rows


class Settings(BaseSettings):
    """The effective configuration of one lab."""

    model_config = SettingsConfigDict(
        env_prefix="MLSD_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file="mlsd.toml",
        frozen=True,
    )

    profile: Profile = Field(
        "local", description="Backend set: local (embedded), scale (Redis/Postgres), k8s (cluster)."
    )
    data_dir: Path = Field(
        Path(".mlsd"), description="Root of all lab state; `make clean` deletes it."
    )
    bind_host: str = Field("127.0.0.1", description="Address every server of the lab binds to.")
    simulator: SimulatorSettings = SimulatorSettings()
    ingest: IngestSettings = IngestSettings()
    features: FeatureStoreSettings = FeatureStoreSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()
    stack: StackSettings = StackSettings()
    training: TrainingSettings = TrainingSettings()
    model_servers: ModelServerSettings = ModelServerSettings()
    router: RouterSettings = RouterSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    world: WorldSettings = WorldSettings()
    rollout: RolloutSettings = RolloutSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments beat the environment, which beats mlsd.toml.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    # Derived locations: one data directory holds everything, so a lab resets by deleting it.
    @property
    def raw_dir(self) -> Path:
        """Landing zone where the simulator (the outside world) drops raw batches."""
        return self.data_dir / "raw"

    @property
    def archive_dir(self) -> Path:
        """Raw batches that passed the gate, kept for replay."""
        return self.data_dir / "archive"

    @property
    def offline_dir(self) -> Path:
        """Offline store: validated events as parquet partitions by date."""
        return self.data_dir / "offline"

    @property
    def quarantine_dir(self) -> Path:
        """Batches that failed the gate, each with its validation result beside it."""
        return self.data_dir / "quarantine"

    @property
    def features_dir(self) -> Path:
        """Feature store state: Feast registry, SQLite online store, feature tables."""
        return self.data_dir / "features"

    # The local stack (`mlsd up`): its servers' state, logs and pid files, and how to reach them.
    @property
    def client_host(self) -> str:
        """Host part of the URLs clients use (a wildcard bind is reached on loopback)."""
        if self.bind_host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host

    @property
    def logs_dir(self) -> Path:
        """One log file per process of the local stack (`<name>.log`)."""
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """Pid records of the processes `mlsd up` started (`<name>.json`)."""
        return self.data_dir / "run"

    @property
    def mlflow_dir(self) -> Path:
        """MLflow state of the local profile: SQLite database and artifacts."""
        return self.data_dir / "mlflow"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Where the MLflow server stores artifacts it receives (it proxies uploads)."""
        return self.mlflow_dir / "artifacts"

    @property
    def mlflow_backend_store_uri(self) -> str:
        """MLflow's database: the configured URI, else SQLite (absolute, so any cwd works)."""
        if self.mlflow.backend_store_uri:
            return self.mlflow.backend_store_uri
        return f"sqlite:///{(self.mlflow_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_tracking_uri(self) -> str:
        """What MLFLOW_TRACKING_URI should be for clients of the lab's MLflow server."""
        return f"http://{self.client_host}:{self.mlflow.port}"

    @property
    def monitoring_dir(self) -> Path:
        """Monitoring's output: the Evidently workspace, HTML reports and JSON summaries."""
        return self.data_dir / "monitoring"

    @property
    def world_dir(self) -> Path:
        """The world process's state: its clock, scenarios and labels still to post."""
        return self.data_dir / "world"

    @property
    def world_url(self) -> str:
        """Base URL of the world's control API."""
        return f"http://{self.client_host}:{self.world.port}"

    @property
    def world_router_url(self) -> str:
        """Where the world sends requests and labels: world.router_url, else the lab's router."""
        configured = (self.world.router_url or "").rstrip("/")
        return configured or f"http://{self.client_host}:{self.router.port}"

    @property
    def prefect_home(self) -> Path:
        """PREFECT_HOME of the lab's Prefect server (keeps it out of ~/.prefect)."""
        return self.data_dir / "prefect"

    @property
    def prefect_database_url(self) -> str:
        """Prefect's database: the configured URL, else SQLite under prefect_home."""
        if self.prefect.database_url:
            return self.prefect.database_url
        return f"sqlite+aiosqlite:///{(self.prefect_home / 'prefect.db').resolve()}"

    @property
    def prefect_api_url(self) -> str:
        """What PREFECT_API_URL should be for clients of the lab's Prefect server."""
        return f"http://{self.client_host}:{self.prefect.port}/api"

    @property
    def prefect_client_env(self) -> dict[str, str]:
        """The environment of a client of the lab's Prefect server: its address and retries."""
        return {
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_CLIENT_MAX_RETRIES": str(self.prefect.client_max_retries),
        }

    def model_server_url(self, product: str, shadow: bool = False) -> str:
        """Base URL of one product's model server (`fraud` or `recsys`), for its clients;
        `shadow`: of its shadow server (model_servers.<product>.shadow_http_port)."""
        return f"http://{self.client_host}:{self.model_servers.product(product).ports(shadow)[0]}"

    def upstream_url(self, product: str) -> str:
        """Where the router sends `product`'s requests: router.<product>_upstream, else the
        lab's model server."""
        configured = getattr(self.router, f"{product}_upstream")
        return str(configured) if configured else self.model_server_url(product)

    def shadow_server_url(self, product: str) -> str | None:
        """Where the router sends `product`'s shadow copies, when not to its own server."""
        configured = getattr(self.router, f"{product}_shadow_upstream")
        if configured:
            return str(configured)
        # A router pointed at another model server (router.<product>_upstream) sends its
        # shadows there too, unless told otherwise: the lab's shadow server belongs to the lab's.
        if getattr(self.router, f"{product}_upstream") or (
            self.model_servers.product(product).shadow_http_port is None
        ):
            return None
        return self.model_server_url(product, shadow=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
