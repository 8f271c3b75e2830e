"""The capacity planner: replicas, cores and memory for a request rate and a p99 target, from the
per-replica throughput and latency this stack recorded (`make bench`, benchmarks/results/).

The model, stated so it can be checked by hand:
- A model-server replica serves up to R* requests/s, R* being the highest rate the router
  benchmark ran one model server at while the p99 through the router stayed within the target.
  Nothing above R* was measured, so R* is a floor of what a replica can do, not its ceiling.
  Each replica gets the benchmark machine's cores (it was measured sharing them with the router,
  the other model servers and the load generator: conservative).
- The router is sized by its measured CPU per request: rps x CPU ms / 1000 cores, run at
  `router_utilisation` of a core per replica so queueing does not eat the tail.
- Plus `spare` replicas of each (N+1: one can fail or be rolled without breaching the target).
- Memory: replicas x the RSS each process had after the benchmark's traffic.
`plan_capacity` is pure; `load_bench` reads the recorded figures.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

PRODUCTS = ("fraud", "recsys")
# The router benchmark's figure names (benchmarks/bench_router.py) for each product.
_P99_AT_RATE = {
    "fraud": re.compile(r"^fraud @(\d+(?:\.\d+)?)/s via router p99$"),
    "recsys": re.compile(r"^recs top-10 @(\d+(?:\.\d+)?)/s via router p99$"),
}
_ROUTER_CPU = re.compile(r"^router CPU per fraud request @(\d+(?:\.\d+)?)/s$")
_RSS = {
    "router": "router RSS (after Feast warm-up)",
    "fraud": "fraud server RSS",
    "recsys": "recsys server RSS",
}


class CapacityError(ValueError):
    """An input the planner cannot answer, with why and what to do."""


@dataclass(frozen=True)
class BenchFigures:
    """What the planner reads from the recorded router benchmark."""

    p99_ms_at_rate: dict[str, dict[float, float]]  # product -> {req/s: p99 ms via the router}
    router_cpu_ms_at_rate: dict[float, float]  # {req/s: router CPU ms per fraud request}
    rss_mib: dict[str, float]  # router | fraud | recsys -> MiB
    cores: int  # of the machine the benchmark ran on
    recorded_at: str = ""
    source: str = ""


@dataclass(frozen=True)
class ComponentPlan:
    name: str
    replicas: int
    cores_each: float
    memory_mib_each: float
    why: str

    @property
    def cores(self) -> float:
        return self.replicas * self.cores_each

    @property
    def memory_mib(self) -> float:
        return self.replicas * self.memory_mib_each


@dataclass(frozen=True)
class CapacityPlan:
    rps: float
    p99_ms: float
    product: str
    per_replica_rps: float  # R*
    per_replica_p99_ms: float  # the p99 measured at R*
    components: tuple[ComponentPlan, ...]
    assumptions: tuple[str, ...] = field(default_factory=tuple)
    limits: tuple[str, ...] = field(default_factory=tuple)

    @property
    def replicas(self) -> int:
        return sum(c.replicas for c in self.components)

    @property
    def cores(self) -> float:
        return sum(c.cores for c in self.components)

    @property
    def memory_mib(self) -> float:
        return sum(c.memory_mib for c in self.components)


def load_bench(results_dir: Path) -> BenchFigures:
    """The router benchmark's figures, or a CapacityError saying to run `make bench`."""
    path = results_dir / "router.json"
    if not path.is_file():
        raise CapacityError(
            f"no recorded router benchmark ({path} is missing): run `make bench` first, "
            "the planner only answers from figures this stack measured"
        )
    data = json.loads(path.read_text())
    p99: dict[str, dict[float, float]] = {p: {} for p in PRODUCTS}
    cpu: dict[float, float] = {}
    rss: dict[str, float] = {}
    for row in data.get("figures", []):
        name, value = str(row.get("name", "")), row.get("value")
        if not isinstance(value, int | float):
            continue
        for product, pattern in _P99_AT_RATE.items():
            if m := pattern.match(name):
                p99[product][float(m.group(1))] = float(value)
        if m := _ROUTER_CPU.match(name):
            cpu[float(m.group(1))] = float(value)
        for key, figure in _RSS.items():
            if name == figure:
                rss[key] = float(value)
    return BenchFigures(
        p99_ms_at_rate=p99,
        router_cpu_ms_at_rate=cpu,
        rss_mib=rss,
        cores=int(data.get("machine", {}).get("cores", 0)),
        recorded_at=str(data.get("recorded_at", "")),
        source=str(path),
    )


def plan_capacity(
    rps: float,
    p99_ms: float,
    product: str,
    bench: BenchFigures,
    spare: int = 1,
    router_utilisation: float = 0.6,
) -> CapacityPlan:
    """Replicas per component for `rps` at a p99 within `p99_ms`, from the recorded figures."""
    if not math.isfinite(rps) or rps <= 0:
        raise CapacityError(f"--rps must be a positive request rate, not {rps:g}")
    if not math.isfinite(p99_ms) or p99_ms <= 0:
        raise CapacityError(f"--p99-ms must be a positive latency, not {p99_ms:g}")
    if product not in PRODUCTS:
        raise CapacityError(f"product must be one of {PRODUCTS}, not {product!r}")
    if spare < 0 or not 0 < router_utilisation <= 1:
        raise CapacityError("spare must be >= 0 and router utilisation in (0, 1]")
    measured = bench.p99_ms_at_rate.get(product, {})
    if not measured:
        raise CapacityError(
            f"the recorded benchmark ({bench.source}) has no {product} rate measured through "
            "the router: run `make bench`"
        )
    if bench.cores <= 0 or product not in bench.rss_mib or "router" not in bench.rss_mib:
        raise CapacityError(
            f"the recorded benchmark ({bench.source}) lacks the machine's cores or the "
            "processes' memory: run `make bench` again"
        )
    within = {rate: p99 for rate, p99 in measured.items() if p99 <= p99_ms}
    if not within:
        best_rate, best_p99 = min(measured.items(), key=lambda kv: kv[1])
        raise CapacityError(
            f"no rate this stack measured meets a p99 of {p99_ms:g} ms: the lowest {product} p99 "
            f"recorded is {best_p99:.1f} ms (at {best_rate:g} req/s). A faster replica (a "
            "smaller model, a closer feature store), not more replicas, is what lowers a p99"
        )
    per_replica = max(within)
    servers = math.ceil(rps / per_replica) + spare
    model = ComponentPlan(
        name=f"{product} model server",
        replicas=servers,
        cores_each=float(bench.cores),
        memory_mib_each=bench.rss_mib[product],
        why=f"ceil({rps:g} / {per_replica:g} req/s per replica) + {spare} spare",
    )
    assumptions = [
        f"a {product} model-server replica serves {per_replica:g} req/s with p99 "
        f"{within[per_replica]:.1f} ms through the router: the highest rate measured within "
        f"{p99_ms:g} ms (higher rates were not measured, so this is a floor)",
        f"each replica gets {bench.cores} cores, as on the benchmark machine, where it shared "
        "them with the router and the load generator",
        f"{spare} spare replica(s) per component (one may fail or roll without a breach)",
        "load is spread evenly (round robin); entities are sticky only for the A/B split",
    ]
    if bench.router_cpu_ms_at_rate:
        cpu_rate = min(bench.router_cpu_ms_at_rate, key=lambda r: abs(r - per_replica))
        cpu_ms = bench.router_cpu_ms_at_rate[cpu_rate]
        router_cores = rps * cpu_ms / 1000.0
        routers = math.ceil(router_cores / router_utilisation) + spare
        router_why = (
            f"ceil({rps:g} req/s x {cpu_ms:.2f} ms CPU / 1000 / {router_utilisation:g} "
            f"utilisation) + {spare} spare"
        )
        assumptions.append(
            f"the router spends {cpu_ms:.2f} ms of CPU per request (measured on fraud requests "
            f"at {cpu_rate:g} req/s) and runs at {router_utilisation:.0%} of one core per replica"
            + ("" if product == "fraud" else "; a recs request's router CPU was not measured")
        )
    else:
        routers = servers
        router_why = "one router per model server (no router CPU figure recorded)"
    router = ComponentPlan(
        name="router",
        replicas=routers,
        cores_each=1.0,
        memory_mib_each=bench.rss_mib["router"],
        why=router_why,
    )
    limits = [
        f"{rps / per_replica:.0f}x the rate one replica was measured at: linear scaling holds "
        "only while nothing shared saturates",
        "not sized here (shared, not replicated): the online store (each request reads it), "
        "the prediction log (one row per request: SQLite has one writer, use PostgreSQL), "
        "the registry; each needs its own benchmark at this rate",
        "the fleet's p99 is at least one replica's p99; with a load balancer and network hops "
        "in front (Kubernetes) add their own p99 to the measured one",
        f"figures from {bench.source or 'the recorded benchmark'} ({bench.recorded_at}); "
        "re-run `make bench` after changing the model or the machine",
    ]
    return CapacityPlan(
        rps=rps,
        p99_ms=p99_ms,
        product=product,
        per_replica_rps=per_replica,
        per_replica_p99_ms=within[per_replica],
        components=(router, model),
        assumptions=tuple(assumptions),
        limits=tuple(limits),
    )
