"""Fleet features (issue 19): retry amplification, time wasted in timeouts, redrive throughput.

What is measured, on a ``redis-server`` this module starts on a free loopback port:

1. **Retry amplification under a full outage.** 8 separate processes (``tests/workers/
   fleet_feature_worker.py``, job ``budget``) each make ``calls`` calls through
   ``Retry(4, backoff=constant(0))`` to an upstream that always fails (each attempt is one
   ``INCR`` of a counter, then an exception). Reported: attempts that reached the upstream
   per original call, without a budget and with ``FleetRetryBudget(ratio=0.1, window=30 s,
   min_retries=10)`` shared by the 8 processes.
2. **Time wasted in timeouts, fixed vs adaptive.** One process, 10 concurrent tasks, calls to
   a local TCP upstream (``tests/shifting_upstream.py``) whose latency shifts 10 ms -> 60 ms
   -> 10 ms (a third of the calls each); 5 % of requests (the same seeded choice for both
   runs) are black-holed and end only by the timeout. Fixed: ``Timeout(1.0)``. Adaptive:
   ``Timeout(1.0, adaptive=AdaptiveTimeout(percentile=0.99, factor=2, floor=0.01,
   min_samples=50, sync_interval=0.25))`` on the Redis sketch. Reported: seconds spent
   waiting on black-holed calls (wasted), timeouts of calls the upstream did answer (false
   timeouts: the failure rate the adaptive deadline adds), calls that answered after their
   learnt deadline (``TimeoutStatistics.saved``: held for a witness instead of cut), wall
   time. Run twice: a steady latency, and a jittered one (uniform within +-50 % of it).
3. **Redrive throughput.** ``entries`` dead letters, drained by 1 and by 4 ``aioresil dlq worker``
   processes (``--concurrency 8``, a no-op handler, ``--exit-when-idle``): entries handled
   per second of wall time from starting the workers to the last one exiting (process start
   included).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aioresil import AdaptiveTimeout, CallTimeoutError, DeadLetterQueue, Timeout
from aioresil.backends.redis import RedisBackend

from ._harness import environment, markdown_table, redis_server_version, version

ROOT = Path(__file__).resolve().parent.parent


async def amplification(url: str, calls: int, processes: int) -> list[list[str]]:
    from tests.fleet_jobs import run_all

    rows = []
    for budget in (False, True):
        tag = "on" if budget else "off"
        specs: list[dict[str, Any]] = [
            {
                "job": "budget",
                "url": url,
                "name": f"bench-{tag}",
                "budget": budget,
                "ratio": 0.1,
                "window": 30.0,
                "min_retries": 10,
                "attempts": 4,
                "calls": calls,
                "workers": processes,
                "barrier": f"bench:barrier:{tag}",
                "upstream": f"bench:upstream:{tag}",
            }
            for _ in range(processes)
        ]
        await run_all(specs)
        async with RedisBackend.from_url(url) as backend:
            reached = int(await backend.client.get(f"bench:upstream:{tag}") or 0)
        originals = calls * processes
        rows.append(
            [
                "FleetRetryBudget(ratio=0.1, min_retries=10)" if budget else "no budget",
                str(originals),
                str(reached),
                f"{reached / originals:.3f}",
            ]
        )
    return rows


async def _shifting_run(url: str, mode: str, calls: int, jitter: float) -> list[str]:
    from tests.shifting_upstream import ShiftingUpstream

    upstream = await ShiftingUpstream(latency=0.01, jitter=0.0).start()
    async with RedisBackend.from_url(url) as backend:
        adaptive = None
        if mode == "adaptive":
            adaptive = AdaptiveTimeout(
                percentile=0.99,
                factor=2.0,
                floor=0.01,
                min_samples=50,
                sync_interval=0.25,
                backend=backend,
                name=f"bench-shifting-{jitter:g}",  # each run starts cold
            )
        guard = Timeout(1.0, name=mode, adaptive=adaptive)
        rng = random.Random(19)
        plan = [rng.random() < 0.05 for _ in range(calls)]  # the same requests hang each run
        wasted = 0.0
        false_timeouts = 0
        pending = list(range(calls - 1, -1, -1))

        async def worker() -> None:
            nonlocal wasted, false_timeouts
            while pending:
                i = pending.pop()
                base = 0.06 if calls // 3 <= i < 2 * calls // 3 else 0.01
                upstream.latency = base * (1.0 - jitter / 2)
                upstream.jitter = base * jitter  # uniform in base x (1 +- jitter / 2)
                started = time.perf_counter()
                try:
                    await guard.call(upstream.request, hang=plan[i])
                except CallTimeoutError:
                    if plan[i]:
                        wasted += time.perf_counter() - started
                    else:
                        false_timeouts += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(10)))
        wall = time.perf_counter() - started
        await upstream.stop()
    hung = sum(plan)
    return [
        "Timeout(1.0)" if mode == "fixed" else "Timeout(1.0, adaptive=...)",
        "none" if not jitter else f"+-{jitter / 2:.0%}",
        str(calls),
        str(hung),
        f"{wasted:.2f}",
        f"{wasted / max(hung, 1) * 1000:.0f}",
        f"{false_timeouts} ({false_timeouts / (calls - hung):.2%})",
        str(guard.stats().saved),
        f"{wall:.2f}",
    ]


async def wasted_waiting(url: str, calls: int) -> list[list[str]]:
    return [
        await _shifting_run(url, mode, calls, jitter)
        for jitter in (0.0, 1.0)
        for mode in ("fixed", "adaptive")
    ]


def _worker(url: str, queue: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aioresil",
            "--redis",
            url,
            "dlq",
            "--dlq",
            queue,
            "worker",
            "--handler",
            "tests.workers.redrive_handler:noop",
            "--concurrency",
            "8",
            "--poll",
            "0.05",
            "--exit-when-idle",
            "--default-policy",
            "delay=0,max_delay=0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )


async def redrive_throughput(url: str, entries: int) -> list[list[str]]:
    rows = []
    for workers in (1, 4):
        queue = f"bench-redrive-{workers}"
        async with RedisBackend.from_url(url) as backend:
            dlq = DeadLetterQueue(backend, name=queue)
            for start in range(0, entries, 500):
                prepared = [
                    dlq.prepare("job", {"n": n}, RuntimeError("x"))
                    for n in range(start, min(entries, start + 500))
                ]
                await dlq.push_prepared(prepared)
            started = time.perf_counter()
            procs = [_worker(url, queue) for _ in range(workers)]
            await asyncio.gather(*(asyncio.to_thread(p.wait, 300) for p in procs))
            wall = time.perf_counter() - started
            left = await dlq.count()
        rows.append(
            [str(workers), str(entries), str(left), f"{wall:.2f}", f"{(entries - left) / wall:.0f}"]
        )
    return rows


async def main(smoke: bool) -> str:
    from tests.servers import RedisServer, free_port

    server = RedisServer(free_port()).start()
    try:
        url = server.url
        amp = await amplification(url, calls=5 if smoke else 100, processes=2 if smoke else 8)
        waste = await wasted_waiting(url, calls=60 if smoke else 900)
        redrive = await redrive_throughput(url, entries=40 if smoke else 3000)
    finally:
        server.cleanup()
    return "\n".join(
        [
            "## Fleet: retry amplification, time wasted in timeouts, redrive throughput",
            "",
            f"{datetime.date.today().isoformat()}, {environment()}, "
            f"redis-py {version('redis')}, redis-server {redis_server_version()}.",
            "",
            "Retry amplification under a full outage (`Retry(4)`, every attempt fails; "
            f"{'2' if smoke else '8'} processes on one Redis):",
            "",
            markdown_table(["retry budget", "original calls", "reached upstream", "per call"], amp),
            "",
            "Latency-shifting upstream (10 ms, 60 ms, 10 ms), 5 % of requests black-holed, "
            "10 concurrent tasks:",
            "",
            markdown_table(
                [
                    "timeout",
                    "latency jitter",
                    "calls",
                    "black-holed",
                    "s wasted",
                    "ms per black-holed call",
                    "false timeouts",
                    "answered after the learnt deadline",
                    "wall s",
                ],
                waste,
            ),
            "",
            "Redrive of a DLQ by `aioresil dlq worker` processes (no-op handler, "
            "`--concurrency 8`, process start included):",
            "",
            markdown_table(["workers", "entries", "left", "wall s", "entries/s"], redrive),
            "",
        ]
    )
