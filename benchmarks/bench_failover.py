"""What replicated acknowledgement costs, and how long a failover lasts for a guarded call.

1. **Throughput with and without ``wait_replicas=1``**: DLQ ``push`` and checkpoint ``save``
   (1 KB state, fenced) on a master with one replica on loopback, 1 task and 50 tasks, the
   same backend options apart from ``wait_replicas``; rounds alternate and the best of each
   counts. Ratio = time per call with WAIT / time per call without.
2. **Failover time seen by a guarded call**: a master, a replica and three sentinels
   (``tests/sentinel.py``); a strict-mode breaker on ``RedisBackend.from_sentinel`` guards a
   call every 2 ms. Measured: from ``SENTINEL FAILOVER`` to the first guarded call whose
   outcome was recorded by the *new* master (a successful remote decision), and how many
   calls were decided locally (fail-open) in between. Sentinel runs with
   ``down-after-milliseconds 1000`` and ``failover-timeout 3000``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aioresil import CheckpointStore, CircuitBreaker, DeadLetterQueue
from aioresil.backends.backend_health import BackendState
from aioresil.backends.redis import RedisBackend

from ._harness import markdown_table


async def _rate(call: Any, tasks: int, per_task: int) -> float:
    async def worker(task: int) -> None:
        for i in range(per_task):
            await call(task, i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return tasks * per_task / (time.perf_counter() - started)


async def _throughput(master_url: str, smoke: bool) -> list[list[str]]:
    plain = RedisBackend.from_url(master_url, listen=False, max_connections=64)
    acked = RedisBackend.from_url(master_url, listen=False, max_connections=64, wait_replicas=1)
    rows: list[list[str]] = []
    try:
        state = {"cursor": 1, "blob": "x" * 1000}
        for tasks in (1, 50):
            per_task = 5 if smoke else max(2000 // tasks, 20)
            repeats = 1 if smoke else 3
            for what in ("DLQ push", "checkpoint save (1 KB)"):
                best = {"off": 0.0, "on": 0.0}
                for round_no in range(repeats):
                    for label, backend in (("off", plain), ("on", acked)):
                        if what == "DLQ push":
                            dlq = DeadLetterQueue(backend, name=f"bench-{label}-{tasks}")

                            async def call(task: int, i: int, dlq: Any = dlq) -> None:
                                await dlq.push("job", {"i": i}, "boom")

                        else:
                            store = CheckpointStore(
                                backend, namespace=f"b-{label}-{tasks}-{round_no}"
                            )
                            versions = [0] * tasks

                            async def call(
                                task: int, i: int, store: Any = store, versions: Any = versions
                            ) -> None:
                                versions[task] = await store.save(
                                    f"t{task}", state, expected_version=versions[task]
                                )

                        best[label] = max(best[label], await _rate(call, tasks, per_task))
                rows.append(
                    [
                        what,
                        str(tasks),
                        f"{best['off']:,.0f}",
                        f"{best['on']:,.0f}",
                        f"{best['off'] / best['on']:.2f}x",
                    ]
                )
    finally:
        await plain.aclose()
        await acked.aclose()
    return rows


async def _failover_time(deployment: Any) -> tuple[float, int, int]:
    from tests.sentinel import SERVICE

    backend = RedisBackend.from_sentinel(
        deployment.addresses,
        SERVICE,
        operation_timeout=0.5,
        socket_timeout=0.5,
        socket_connect_timeout=0.3,
    )
    breaker = CircuitBreaker("failover-probe", backend=backend)
    handle: Any = breaker.handle
    pool: Any = backend.client.connection_pool
    try:
        for _ in range(20):  # warm up: scripts loaded, the pool connected
            async with breaker:
                pass
        old = deployment.master_port()
        new = ("127.0.0.1", next(n.port for n in deployment.nodes if n.port != old))
        local = 0
        calls = 0
        started = time.perf_counter()
        await asyncio.to_thread(deployment.request_failover)
        while True:
            async with breaker:
                pass
            calls += 1
            remote = backend.health.state is BackendState.HEALTHY and handle._fallback is None
            if not remote:
                local += 1
            elif pool.master_address is not None and tuple(pool.master_address) == new:
                return time.perf_counter() - started, calls, local
            if time.perf_counter() - started > 60:
                raise RuntimeError("no remote decision on the new master within 60 s")
            await asyncio.sleep(0.002)
    finally:
        await backend.aclose()


async def main(smoke: bool) -> str:
    from tests.sentinel import SentinelDeployment

    deployment = SentinelDeployment().start()
    try:
        master = f"redis://127.0.0.1:{deployment.master_port()}/0"
        rows = await _throughput(master, smoke)
        seconds, calls, local = await _failover_time(deployment)
    finally:
        deployment.cleanup()
    table = markdown_table(
        ["operation", "tasks", "ops/s, no WAIT", "ops/s, wait_replicas=1", "ratio (time)"], rows
    )
    return (
        "## Replicated acknowledgement and failover (`benchmarks/bench_failover.py`)\n\n"
        "DLQ `push` and fenced checkpoint `save` on a master with one replica (loopback), "
        "without and with `wait_replicas=1` (each write followed by `WAIT 1` in the same "
        "round trip); best of interleaved rounds. Ratio = time per call with WAIT / "
        "without.\n\n"
        f"{table}\n\n"
        "Failover as seen by a guarded call (strict breaker on "
        "`RedisBackend.from_sentinel`, one call every 2 ms; Sentinel "
        "`down-after-milliseconds 1000`, `failover-timeout 3000`): "
        f"**{seconds:.2f} s** from `SENTINEL FAILOVER` to the first outcome recorded by the "
        f"new master; {calls} calls in between, {local} of them decided locally (fail-open), "
        "none failed.\n"
    )
