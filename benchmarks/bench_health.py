"""Health endpoints: in-process latency (p50/p99) per endpoint, against a trivial ASGI floor.

Every request is a direct ASGI call (scope, receive, send; no HTTP, no sockets between client
and app), so what is measured is the app's own work plus its backend reads. The floor is a
trivial ASGI app answering a 2-field JSON body, called the same way, interleaved in the same
run. Cells:

* ``/health`` (liveness: no backend I/O) and ``/health/ready`` (one PING);
* ``/health/circuit-breakers`` and ``/metrics`` with 1, 100 and 1,000 breakers (one
  pipelined round trip for all of them on Redis), DLQ empty;
* ``/health/dlq`` and ``/metrics`` with 0, 10k and 1M dead letters (one stats script on
  Redis), 1 breaker. Queues are filled with ``push_prepared`` (smaller in ``--smoke``).

Redis is a real ``redis-server`` on loopback started for the run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aioresil import BreakerConfig, BreakerRegistry, DeadLetterQueue, MemoryBackend, RedisBackend
from aioresil.health.app import HealthApp, health_app

from ._harness import markdown_table
from .bench_dlq import fill

try:
    from tests.servers import RedisServer, free_port
except ImportError:  # pragma: no cover - benchmarks run from the repository root
    raise SystemExit("run benchmarks from the repository root: python -m benchmarks") from None

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b'{"status":"healthy","ok":true}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def call(app: App, path: str) -> int:
    """One GET through ``app`` (``path`` may carry a query string); returns the status
    (checked by the caller)."""
    target, _, query = path.partition("?")
    status = 0
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": target,
        "raw_path": target.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"accept", b"application/json")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def percentile(sorted_us: list[float], q: float) -> float:
    return sorted_us[min(int(q * len(sorted_us)), len(sorted_us) - 1)]


async def measure(
    app: App, path: str, n: int, budget_s: float = 4.0
) -> tuple[float, float, float, float]:
    """p50/p99 of ``path`` and of the floor, interleaved call by call (µs).

    ``n`` calls, or fewer (at least 30) when they would take more than ``budget_s``.
    """
    ours: list[float] = []
    floor: list[float] = []
    for _ in range(3):  # warm-up: scripts loaded, pools connected
        await call(app, path)
        await call(floor_app, "/health")
    deadline = time.perf_counter() + budget_s
    for i in range(n):
        if i >= 30 and time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        status = await call(app, path)
        ours.append((time.perf_counter() - started) * 1e6)
        if status >= 500:
            raise RuntimeError(f"{path} answered {status} during the benchmark")
        started = time.perf_counter()
        await call(floor_app, "/health")
        floor.append((time.perf_counter() - started) * 1e6)
    ours.sort()
    floor.sort()
    return (
        percentile(ours, 0.5),
        percentile(ours, 0.99),
        percentile(floor, 0.5),
        percentile(floor, 0.99),
    )


def row(
    kind: str, path: str, breakers: int | str, entries: int | str, m: tuple[float, ...]
) -> list[str]:
    p50, p99, f50, _ = m
    route, _, note = path.partition(" ")
    return [
        kind,
        f"`{route}`" + (f" {note}" if note else ""),
        f"{breakers:,}" if isinstance(breakers, int) else breakers,
        f"{entries:,}" if isinstance(entries, int) else entries,
        f"{p50:.0f}",
        f"{p99:.0f}",
        f"{f50:.1f}",
        f"{p50 / f50:.0f}x",
        f"{max(p50 - f50, 0) / 1000:.3f}",
    ]


def make_app(
    backend: Any,
    breakers: int,
    dlq: DeadLetterQueue | None,
    cache_ttl: float = 0.0,
    registry: BreakerRegistry | None = None,
) -> HealthApp:
    if registry is None:
        registry = BreakerRegistry(
            backend=backend, default_config=BreakerConfig(failure_threshold=1000)
        )
        for i in range(breakers):
            registry.get(f"svc-{i:04d}")
    return health_app(
        registry=registry,
        dlq=dlq,
        dlq_warning_threshold=10**8,
        dlq_critical_threshold=10**9,
        cache_ttl=cache_ttl,
    )


async def bench_backend(
    kind: str, new_backend: Callable[[], Awaitable[Any]], smoke: bool
) -> list[list[str]]:
    n = 50 if smoke else 500
    breaker_sizes = (1, 100) if smoke else (1, 100, 1000)
    dlq_sizes = (0, 1000) if smoke else (0, 10_000, 1_000_000)
    rows: list[list[str]] = []
    backend = await new_backend()
    try:
        app = make_app(backend, 1, DeadLetterQueue(backend, name="empty"))
        for path in ("/health", "/health/ready"):
            rows.append(row(kind, path, "-", "-", await measure(app, path, n)))
        for size in breaker_sizes:
            app = make_app(backend, size, None)
            # touch every breaker once so Redis holds a state hash for each
            for breaker in app.registry or ():
                async with breaker:
                    pass
            cached = make_app(backend, 0, None, cache_ttl=1.0, registry=app.registry)
            for path in ("/health/circuit-breakers", "/metrics"):
                rows.append(row(kind, path, size, "-", await measure(app, path, n)))
            if size == breaker_sizes[-1]:
                for path in ("/health/circuit-breakers", "/metrics"):
                    m = await measure(cached, path, n)
                    rows.append(row(kind, path + " cache_ttl=1", size, "-", m))
        for entries in dlq_sizes:
            dlq = DeadLetterQueue(backend, name=f"q{entries}", max_entries=2_000_000)
            if entries:
                await fill(dlq, entries, spread_s=7 * 86_400)
            app = make_app(backend, 1, dlq)
            for path in ("/health/dlq", "/metrics"):
                rows.append(row(kind, path, 1, entries, await measure(app, path, n)))
            if entries == dlq_sizes[-1]:
                cached = make_app(backend, 1, dlq, cache_ttl=1.0)
                for path in ("/health/dlq", "/metrics"):
                    m = await measure(cached, path, n)
                    rows.append(row(kind, path + " cache_ttl=1", 1, entries, m))
            if entries and kind == "Redis":
                await dlq.purge()
    finally:
        await backend.aclose()
    return rows


async def main(smoke: bool) -> str:
    async def memory() -> Any:
        return MemoryBackend()

    server = RedisServer(free_port()).start()
    try:

        async def redis() -> Any:
            return RedisBackend.from_url(server.url, listen=False)

        rows = await bench_backend("memory", memory, smoke)
        rows += await bench_backend("Redis", redis, smoke)
    finally:
        server.cleanup()
    table = markdown_table(
        [
            "backend",
            "endpoint",
            "breakers",
            "DLQ entries",
            "p50 µs",
            "p99 µs",
            "floor p50 µs",
            "p50 / floor",
            "p50 above floor, ms",
        ],
        rows,
    )
    return (
        "## Health endpoints (direct ASGI calls; Redis: real redis-server on loopback)\n\n"
        f"{table}\n\nFloor: a trivial ASGI app answering a small JSON body, called the same way "
        "in the same run, interleaved call by call.\n"
    )
