"""``/metrics`` render time: 1,000 breakers on memory and on Redis, and with Redis down.

Each cell is the median and p99 of direct ASGI calls to the health app's ``/metrics`` (no
HTTP, no cache), so it is the app's own work: one bulk read of every breaker (one round trip
on Redis), the DLQ statistics, and rendering ~16,000 lines of text. "Redis down" points the
same registry at a closed port on loopback (connection refused at once): the series of this
process (thresholds, spool, backend up) are still rendered, with status 200.
"""

from __future__ import annotations

import time

from aioresil import BreakerRegistry, DeadLetterQueue, MemoryBackend, RedisBackend
from aioresil.health.app import health_app

from ._harness import markdown_table
from .bench_health import call, percentile

try:
    from tests.servers import RedisServer, free_port
except ImportError:  # pragma: no cover - benchmarks run from the repository root
    raise SystemExit("run benchmarks from the repository root: python -m benchmarks") from None


async def _cell(label: str, backend: object, breakers: int, rounds: int) -> list[str]:
    registry = BreakerRegistry(backend=backend)  # type: ignore[arg-type]
    for n in range(breakers):
        registry.get(f"service-{n:04d}")
    app = health_app(registry=registry, dlq=DeadLetterQueue(backend, name="jobs"))
    assert await call(app, "/metrics") == 200  # warm up; 200 even with Redis down
    samples: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        status = await call(app, "/metrics")
        samples.append((time.perf_counter() - started) * 1e3)
        assert status == 200
    samples.sort()
    return [
        label,
        f"{breakers:,}",
        f"{percentile(samples, 0.5):.1f}",
        f"{percentile(samples, 0.99):.1f}",
    ]


async def main(smoke: bool) -> str:
    breakers = 50 if smoke else 1000
    rounds = 3 if smoke else 60
    rows = [await _cell("memory", MemoryBackend(), breakers, rounds)]
    server = RedisServer(free_port()).start()
    try:
        async with RedisBackend.from_url(server.url, listen=False) as up:
            rows.append(await _cell("Redis", up, breakers, rounds))
    finally:
        server.cleanup()
    down = RedisBackend.from_url(
        f"redis://127.0.0.1:{free_port()}/0", listen=False, socket_connect_timeout=1.0
    )
    try:
        rows.append(await _cell("Redis down (connection refused)", down, breakers, rounds))
    finally:
        await down.aclose()
    table = markdown_table(["backend", "breakers", "p50 ms", "p99 ms"], rows)
    return (
        "## /metrics render time (`benchmarks/bench_metrics.py`)\n\n"
        "Direct ASGI calls, no cache; every breaker read in one round trip on Redis.\n\n"
        f"{table}\n"
    )
