"""Live traffic for a walkthrough step: `python -m mlsd.walk.traffic fraud|recsys --n N
--rate R [--labels] [--judge]` sends the simulated world's requests (`simulator.live`) to the
router at an open-loop rate and prints what came back; `--labels` then posts each fraud request's
label (the world's chargeback truth) to /v1/feedback, as late labels would arrive; `--judge` then
runs the `monitor` flow, as `mlsd monitor` does, on exactly the span these requests filled."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import numpy as np

from mlsd.settings import Settings
from mlsd.telemetry import quiet_libraries


def fraud_bodies(
    settings: Settings, n: int, seed: int, scenario: str | None = None
) -> tuple[list[dict[str, Any]], list[int]]:
    """`n` transactions of the day after the latest landed day (the day the world plays next,
    as it would under `scenario`, if given), with whether each was fraud. That day and not a
    fixed one: the feature store follows the landed days, and a day already behind it is
    served features from its future (measured in a lab after `make demo`: 6 of 21 inputs
    drifted on a replayed old day with no scenario)."""
    from simulator.landing import simulate_frames
    from simulator.landing_zone import first_open_day

    day = first_open_day(settings)
    frames = simulate_frames(
        settings, "fraud", days=1, seed=settings.simulator.seed, start=day, scenario=scenario
    )
    tx = frames["transactions"].merge(frames["truth"], on="transaction_id", how="left")
    tx = tx.sample(n=min(n, len(tx)), random_state=seed).sort_values("event_timestamp")
    columns = ["card_id", "merchant_id", "amount", "country", "device_id", "event_timestamp"]
    records: list[dict[Any, Any]] = tx[columns].to_dict("records")
    bodies = [
        {
            "card_id": r["card_id"],
            "merchant_id": r["merchant_id"],
            "amount": float(r["amount"]),
            "country": r["country"],
            "device_id": r["device_id"],
            "timestamp": r["event_timestamp"].isoformat(),
        }
        for r in records
    ]
    return bodies, [int(bool(v)) for v in tx["is_fraud"].fillna(False)]


async def send_all(url: str, bodies: list[dict[str, Any]], rate: float) -> list[dict[str, Any]]:
    """POST each body at `rate` per second (arrivals do not wait for answers); one result each,
    in the bodies' order."""
    results: list[dict[str, Any]] = [{} for _ in bodies]
    # Open loop: arrivals never wait for a free connection (no pool timeout); a request waits
    # at most 30 s for its answer, so a slow machine shows as latency, not as lost requests.
    timeout = httpx.Timeout(30.0, pool=None)
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:

        async def one(i: int, body: dict[str, Any]) -> None:
            sent_at, started = time.time(), time.perf_counter()
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as err:
                results[i] = {"status": type(err).__name__, "sent_at": sent_at}
                return
            payload = response.json() if response.status_code == 200 else {}
            results[i] = {
                "status": response.status_code,
                "ms": (time.perf_counter() - started) * 1000,
                "sent_at": sent_at,
                **payload,
            }

        begun = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            delay = begun + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, body)))
        await asyncio.gather(*tasks)
    return results


async def post_labels(base: str, results: list[dict[str, Any]], labels: list[int]) -> int:
    joined = 0
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        for result, label in zip(results, labels, strict=True):
            if "request_id" not in result:
                continue
            body = {"request_id": result["request_id"], "label": label}
            response = await client.post(f"{base}/v1/feedback", json=body)
            joined += response.status_code == 200
    return joined


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if r.get("status") == 200]
    latencies = np.array([r["ms"] for r in ok]) if ok else np.array([np.nan])
    return {
        "sent": len(results),
        "ok": len(ok),
        "errors": dict(Counter(str(r.get("status")) for r in results if r.get("status") != 200)),
        "degraded": sum(bool(r.get("degraded")) for r in ok),
        "p50_ms": float(np.nanpercentile(latencies, 50)),
        "p99_ms": float(np.nanpercentile(latencies, 99)),
        "arms": dict(Counter(str(r.get("arm")) for r in ok)),
        "answered_by": dict(Counter(str(r.get("model_version")) for r in ok)),
    }


# The router stamps a request on arrival, a few milliseconds after it is sent on this machine:
# the judged span ends this long after the last one left. Not at the last answer: one slow
# answer (the walkthroughs' CI allows the model a second) would widen a 10 s span past the
# monitor's coverage bar (monitoring.min_coverage, 90 % of the span), and it would not judge it.
ARRIVAL_MARGIN_S = 0.25


def filled_span(results: list[dict[str, Any]]) -> tuple[float, float]:
    """(start, end) epoch seconds of the log these requests filled: from the first sent to
    ARRIVAL_MARGIN_S after the last sent."""
    sent = [r["sent_at"] for r in results]
    return min(sent) - 0.01, max(sent) + ARRIVAL_MARGIN_S


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlsd.walk.traffic", description=__doc__)
    parser.add_argument("product", choices=["fraud", "recsys"])
    parser.add_argument("--n", type=int, default=200, help="requests to send")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--labels", action="store_true", help="post fraud labels afterwards")
    parser.add_argument("--scenario", help="fraud: a drift scenario of `mlsd scenarios`")
    parser.add_argument(
        "--judge",
        action="store_true",
        help="then judge the window these requests filled, as `mlsd monitor` does",
    )
    args = parser.parse_args(argv)
    quiet_libraries()  # before MLflow, Prefect or GX is imported (the reference, the flow)
    if args.n <= 0 or args.rate <= 0:
        parser.error("--n and --rate must be positive")
    settings = Settings()
    base = f"http://{settings.client_host}:{settings.router.port}"
    labels: list[int] = []
    if args.product == "fraud":
        bodies, labels = fraud_bodies(settings, args.n, args.seed, args.scenario)
        url = f"{base}/v1/fraud/score"
    else:
        from simulator.live import recs_requests

        bodies, url = recs_requests(settings, args.n, args.seed), f"{base}/v1/recs"
    results = asyncio.run(send_all(url, bodies, args.rate))
    s = summary(results)
    print(
        f"{args.product}: sent {s['sent']} at {args.rate:g} req/s, ok {s['ok']}, "
        f"errors {s['errors'] or 0}, degraded {s['degraded']}"
    )
    print(f"latency (client side): p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms")
    print("arms: " + ", ".join(f"{k} {v}" for k, v in sorted(s["arms"].items())))
    print("answered by: " + ", ".join(f"{k} {v}" for k, v in sorted(s["answered_by"].items())))
    if args.product == "fraud":
        blocked = sum(r.get("decision") == "block" for r in results)
        scores = [float(r["score"]) for r in results if "score" in r]
        amounts = sorted(float(b["amount"]) for b in bodies)
        print(f"blocked {blocked} of {s['ok']}; frauds in the sample (world truth) {sum(labels)}")
        print(
            f"mean score {float(np.mean(scores)) if scores else float('nan'):.4f}; "
            f"median amount sent {amounts[len(amounts) // 2]:.2f}"
        )
        if args.labels:
            joined = asyncio.run(post_labels(base, results, labels))
            print(f"labels joined to the prediction log: {joined}")
    if s["ok"] != s["sent"]:
        return 1
    if args.judge:
        from mlsd.commands.monitor import judge_and_show

        start, end = filled_span(results)
        return judge_and_show(args.product, window=end - start, until=end)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
