"""Operator reads (issue 17): 1,000 breakers through ``/health/circuit-breakers`` and
``/metrics``, and every dashboard read, with the Redis round trips each one costs.

Time: direct ASGI calls (no sockets), p50 of interleaved calls, minus a trivial ASGI app's
p50 in the same run ("our own work"). "BreakerStats path" redoes what the endpoint did before
the rows (``registry.stats()``, ``to_dict()`` per breaker, ``json.dumps``) in the same run, so
the ratio survives a loaded machine. Round trips: commands ``MONITOR`` sees on a real
``redis-server`` during one request (commands run inside scripts are not counted).
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from aioresil import BreakerConfig, BreakerRegistry, DeadLetterQueue, MemoryBackend, RedisBackend
from aioresil.dashboard import dashboard_app
from aioresil.health import health_app

from ._harness import environment, markdown_table, redis_server_version, version
from .bench_health import call, floor_app, percentile

try:
    from tests.monitor import Monitor, client_commands
    from tests.servers import RedisServer, free_port
except ImportError:  # pragma: no cover - benchmarks run from the repository root
    raise SystemExit("run benchmarks from the repository root: python -m benchmarks") from None


async def stats_path(registry: BreakerRegistry) -> None:
    """The body as ``/health/circuit-breakers`` built it before rows: one dataclass, one
    dict and ``json.dumps`` per breaker."""
    stats = await registry.stats()
    json.dumps({name: one.to_dict() for name, one in stats.items()}, separators=(",", ":"))


async def interleaved(app: Any, path: str, registry: BreakerRegistry, n: int) -> list[float]:
    """p50 (µs) of the endpoint, of the BreakerStats path and of the floor, call by call."""
    ours: list[float] = []
    before: list[float] = []
    floor: list[float] = []
    for _ in range(3):
        await call(app, path)
        await stats_path(registry)
    deadline = time.perf_counter() + 6.0
    for i in range(n):
        if i >= 20 and time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        status = await call(app, path)
        ours.append((time.perf_counter() - started) * 1e6)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        started = time.perf_counter()
        await stats_path(registry)
        before.append((time.perf_counter() - started) * 1e6)
        started = time.perf_counter()
        await call(floor_app, "/health")
        floor.append((time.perf_counter() - started) * 1e6)
    # The same endpoint called back to back (a scraper polling in a loop, caches warm), the
    # floor likewise: what our work costs when nothing else ran between two reads.
    warm: list[float] = []
    warm_floor: list[float] = []
    for _ in range(len(ours)):
        started = time.perf_counter()
        await call(app, path)
        warm.append((time.perf_counter() - started) * 1e6)
    for _ in range(len(ours)):
        started = time.perf_counter()
        await call(floor_app, "/health")
        warm_floor.append((time.perf_counter() - started) * 1e6)
    return [percentile(sorted(x), 0.5) for x in (ours, before, floor, warm, warm_floor)]


async def registry_of(backend: Any, breakers: int) -> BreakerRegistry:
    registry = BreakerRegistry(backend=backend, default_config=BreakerConfig())
    for i in range(breakers):
        async with registry.get(f"svc-{i:04d}"):
            pass
    return registry


def timing_row(kind: str, path: str, breakers: int, m: list[float], trips: str) -> list[str]:
    ours, before, floor, warm, warm_floor = m
    return [
        kind,
        f"`{path}`",
        f"{breakers:,}",
        f"{max(ours - floor, 0) / 1000:.2f}",
        f"{max(warm - warm_floor, 0) / 1000:.2f}",
        f"{max(before - floor, 0) / 1000:.2f}" if path.startswith("/health/c") else "-",
        f"{before / ours:.1f}x" if path.startswith("/health/c") else "-",
        trips,
    ]


async def round_trips(url: str, app: Any, path: str) -> int:
    monitor = Monitor(url)
    try:
        await call(app, path)  # warm: scripts loaded, connections open

        async def request() -> None:
            status = await call(app, path)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")

        return len(client_commands(await monitor.during(request)))
    finally:
        monitor.close()


async def main(smoke: bool) -> str:
    breakers = 50 if smoke else 1000
    n = 20 if smoke else 300
    rows: list[list[str]] = []
    memory = await registry_of(MemoryBackend(), breakers)
    app = health_app(registry=memory)
    for path in ("/health/circuit-breakers", "/metrics"):
        rows.append(
            timing_row("memory", path, breakers, await interleaved(app, path, memory, n), "0")
        )
    server = RedisServer(free_port()).start()
    try:
        async with RedisBackend.from_url(server.url, listen=False) as backend:
            registry = await registry_of(backend, breakers)
            app = health_app(registry=registry)
            for path in ("/health/circuit-breakers", "/metrics"):
                m = await interleaved(app, path, registry, n)
                trips = await round_trips(server.url, app, path)
                rows.append(timing_row("Redis", path, breakers, m, str(trips)))
            dlq = DeadLetterQueue(backend, name="ops")
            for i in range(20 if smoke else 500):
                await dlq.push(task_type="mail", payload={"n": i}, error=ValueError("down"))
            entry = (await dlq.list(limit=1)).entries[0]
            dashboard = dashboard_app(registry=registry, dlq=dlq)
            trip_rows = []
            for path in (
                "/api/breakers",
                "/api/dlq/stats",
                "/api/dlq/entries?limit=50",
                "/api/dlq/entries?limit=200",
                f"/api/dlq/entries/{entry.id}",
            ):
                trips = await round_trips(server.url, dashboard, path)
                label = path.replace(entry.id, "{id}")
                trip_rows.append([f"`{label}`", str(trips)])
    finally:
        server.cleanup()
    table = markdown_table(
        [
            "backend",
            "endpoint",
            "breakers",
            "our work p50, ms",
            "back to back, ms",
            "BreakerStats path p50, ms",
            "speed-up",
            "Redis round trips",
        ],
        rows,
    )
    trips_table = markdown_table(["dashboard read (Redis)", "round trips"], trip_rows)
    return (
        "## Operator reads (issue 17)\n\n"
        f"{datetime.date.today().isoformat()}, {environment()}, "
        f"redis-py {version('redis')}, redis-server {redis_server_version()}.\n\n"
        f"{table}\n\n{trips_table}\n\n"
        "Our work: the endpoint's p50 minus a trivial ASGI app's p50, interleaved call by call "
        "(direct ASGI calls). Back to back: the same, the endpoint called in a loop with nothing "
        "between two calls (caches warm), against the floor called the same way. "
        "BreakerStats path: `registry.stats()` + `to_dict()` + `json.dumps`, "
        "what `/health/circuit-breakers` did before it rendered rows, timed in the same run. "
        "Round trips: client commands `MONITOR` saw on the redis-server during one request.\n"
    )
