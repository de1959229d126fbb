"""Four processes, one circuit: when one of them trips it, all of them stop calling within
milliseconds.

What it shows: four worker processes each build a ``CircuitBreaker("shared-upstream")`` on a
``RedisBackend`` with the same prefix, so they share one circuit. Each calls its (simulated)
upstream every millisecond. When the parent says "go", worker 0's upstream starts failing;
once its failures make 20% of the last 20 calls in the shared window, the circuit opens, in
one atomic Lua script that also publishes the transition. Every other process gets the message
on its subscriber, updates its local view, and its next call is rejected with
``CircuitOpenError`` without touching the upstream (and without a round trip to Redis).

The trip moment is when worker 0 sent the failure that opened the circuit (its own
``StateChanged`` event says which one); each worker reports when it stopped (worker 0: when
the reply said OPEN; the others: their first rejection), and the timestamps of its last
upstream calls; the parent prints how long after the trip each worker stopped, how many
upstream calls still went out after the trip, and the spread between the first and the last
worker to stop.

Run it (needs a Redis server; no internet; from a checkout, ``pip install -e '.[redis]'``)::

    python examples/multi_process.py --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import sys
import time
from typing import Any

import structlog

from aioresil import (
    AioresilError,
    BreakerConfig,
    BreakerEvent,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    StateChanged,
)

NAME = "shared-upstream"
WORKERS = 4


class UpstreamDown(Exception):
    """The simulated upstream failed."""


# Worker 0 fails every call, about a quarter of all calls: a failure-rate rule over the
# shared window trips on that (a consecutive-failures rule would not, since the other workers'
# successes interleave with worker 0's failures).
CONFIG = BreakerConfig(
    failure_threshold=None,
    failure_rate_threshold=0.2,
    window_size=20,
    minimum_calls=10,
    recovery_timeout=30.0,
    record_exceptions=(UpstreamDown,),
)


async def worker(index: int, url: str, prefix: str, go: Any, results: Any) -> None:
    from aioresil import RedisBackend

    failing = index == 0
    opened_at: float | None = None  # when the failure that tripped the circuit was sent
    stopped_at: float | None = None  # when this worker learnt the circuit is open
    sent = 0.0
    calls: list[float] = []

    def on_event(event: BreakerEvent) -> None:
        nonlocal opened_at, stopped_at
        if isinstance(event, StateChanged) and event.new is CircuitState.OPEN:
            # Only this worker's own transitions come as events: from its failing call's reply.
            opened_at, stopped_at = sent, time.time()

    async with RedisBackend.from_url(url, prefix=prefix) as backend:
        breaker = CircuitBreaker(NAME, config=CONFIG, backend=backend)
        breaker.add_listener(on_event)
        async with breaker:  # first call: syncs the local view, starts the subscriber
            pass
        results.put({"ready": index})
        give_up = time.monotonic() + 60  # 5 s after "go" at the latest
        while time.monotonic() < give_up:
            if go.is_set() and give_up - time.monotonic() > 5:
                give_up = time.monotonic() + 5
            try:
                async with breaker:
                    calls.append(time.time())
                    if failing and go.is_set():
                        sent = time.time()  # __aexit__ sends this failure to Redis next
                        raise UpstreamDown("upstream answered 503")
            except CircuitOpenError:
                if stopped_at is None:
                    stopped_at = time.time()
                break
            except UpstreamDown:
                pass
            await asyncio.sleep(0.001)
    results.put(
        {
            "worker": index,
            "failing": failing,
            "opened_at": opened_at,
            "stopped_at": stopped_at,
            "last_calls": calls[-20:],
            "calls": len(calls),
        }
    )


def worker_process(index: int, url: str, prefix: str, go: Any, results: Any) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(worker(index, url, prefix, go, results))


async def reset_breaker(url: str, prefix: str) -> None:
    from aioresil import RedisBackend

    async with RedisBackend.from_url(url, prefix=prefix) as backend:
        await CircuitBreaker(NAME, config=CONFIG, backend=backend).reset()


def wait_for_subscribers(url: str, channel: str, count: int, timeout: float = 10) -> None:
    """Wait until every worker's pub/sub subscriber is listening (else "go" could race it)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) >= count:
                return
            time.sleep(0.01)
        raise SystemExit(f"the workers did not subscribe to {channel!r} within {timeout} s")
    finally:
        client.close()


def run(url: str, prefix: str) -> dict[str, Any]:
    asyncio.run(reset_breaker(url, prefix))
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=worker_process, args=(i, url, prefix, go, results))
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        for _ in range(WORKERS):
            results.get(timeout=30)  # {"ready": i}
        wait_for_subscribers(url, f"{prefix}:breaker-events", WORKERS)
        time.sleep(0.05)  # a few healthy calls everywhere first
        go.set()
        reports = sorted(
            (results.get(timeout=30) for _ in range(WORKERS)), key=lambda r: r["worker"]
        )
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    tripped = reports[0]["opened_at"]
    rows = []
    for report in reports:
        stopped = report["stopped_at"]
        after = sum(1 for t in report["last_calls"] if tripped is not None and t > tripped)
        rows.append(
            {
                "worker": report["worker"],
                "failing": report["failing"],
                "saw_open": stopped is not None,
                "stopped_ms_after_trip": None
                if stopped is None or tripped is None
                else round((stopped - tripped) * 1000, 3),
                "upstream_calls_after_trip": after,
                "calls": report["calls"],
            }
        )
    stops = [r["stopped_ms_after_trip"] for r in rows if r["stopped_ms_after_trip"] is not None]
    spread = round(max(stops) - min(stops), 3) if len(stops) == WORKERS else None
    return {"workers": rows, "all_saw_open": len(stops) == WORKERS, "spread_ms": spread}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", metavar="URL", required=True, help="Redis URL (required)")
    parser.add_argument("--prefix", default="aioresil-examples", help="key prefix of the run")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        result = run(args.redis, args.prefix)
    except (AioresilError, OSError) as exc:  # Redis down or refusing: one line, no traceback
        print(f"multi_process: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for row in result["workers"]:
            role = "failing upstream, tripped the circuit" if row["failing"] else "healthy upstream"
            print(
                f"worker {row['worker']} ({role}): stopped {row['stopped_ms_after_trip']} ms "
                f"after the trip, {row['upstream_calls_after_trip']} upstream call(s) after it, "
                f"{row['calls']} calls in all"
            )
        print(
            f"all {WORKERS} workers saw OPEN: {result['all_saw_open']}; "
            f"spread between the first and the last to stop: {result['spread_ms']} ms"
        )
    return 0 if result["all_saw_open"] else 1


if __name__ == "__main__":
    sys.exit(main())
