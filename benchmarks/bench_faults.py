"""Redis faults: how long a decision takes while Redis is black-holed, and after it returns.

A real ``redis-server`` behind the tests' fault-injection proxy (``tests/faultproxy.py``), the
client built as a new user builds it (``redis.asyncio.Redis(host, port)``: no socket timeout),
``RedisBackend(client)`` with its default ``operation_timeout`` (1 s). Measured:

* the guarded call that meets the black hole (it runs, its record is cut at the deadline),
  then p50/p99 of the next N calls, decided locally by the policy;
* each health endpoint's answer time during the outage: the first request (which may meet the
  black hole itself) and the next one;
* from the proxy passing traffic again to the breaker's first remote decision
  (``BackendRecovered``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import redis.asyncio as aioredis

from aioresil import (
    BackendRecovered,
    BackendUnavailableError,
    BreakerConfig,
    BreakerRegistry,
    CircuitBreaker,
    DeadLetterQueue,
    RedisBackend,
    health_app,
)

from ._harness import markdown_table

try:
    from tests.faultproxy import FaultProxy, Mode
    from tests.servers import RedisServer, free_port
except ImportError:  # pragma: no cover - benchmarks run from the repository root
    raise SystemExit("run benchmarks from the repository root: python -m benchmarks") from None

ENDPOINTS = ("/health", "/health/ready", "/health/circuit-breakers", "/health/dlq", "/metrics")


async def _asgi_get(app: Any, path: str) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    await app(scope, receive, send)
    return status


async def _guarded(breaker: CircuitBreaker) -> str:
    try:
        async with breaker:
            pass
    except BackendUnavailableError:
        return "refused"
    return "ran"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


async def bench_policy(
    proxy: FaultProxy, policy: str, calls: int, deadline: float
) -> tuple[list[str], list[list[str]], str]:
    proxy.set_mode(Mode.PASS)
    client = aioredis.Redis(host="127.0.0.1", port=proxy.port)
    recovered: list[float] = []
    try:
        async with RedisBackend(client, operation_timeout=deadline) as backend:
            registry = BreakerRegistry(
                backend=backend,
                default_config=BreakerConfig(
                    failure_threshold=1_000_000,
                    on_backend_error=policy,  # type: ignore[arg-type]
                ),
            )
            breaker = registry.get(f"bench-{policy}")
            breaker.add_listener(
                lambda e: (
                    recovered.append(time.perf_counter())
                    if isinstance(e, BackendRecovered)
                    else None
                )
            )
            dlq = DeadLetterQueue(backend, name=f"bench-{policy}")
            app = health_app(registry=registry, dlq=dlq)
            await _guarded(breaker)  # the view is CLOSED: the next acquire is local
            proxy.set_mode(Mode.BLACKHOLE)

            started = time.perf_counter()
            first_outcome = await _guarded(breaker)
            first = time.perf_counter() - started
            times: list[float] = []
            outcomes: dict[str, int] = {}
            for _ in range(calls):
                started = time.perf_counter()
                outcome = await _guarded(breaker)
                times.append(time.perf_counter() - started)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            times.sort()
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            decisions = [
                policy,
                f"{_ms(first)} ({first_outcome})",
                _us(p50),
                _us(p99),
                ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
            ]

            # Health endpoints on a second backend that has not seen the outage yet, so the
            # first request meets the black hole itself.
            health_rows: list[list[str]] = []
            fresh_client = aioredis.Redis(host="127.0.0.1", port=proxy.port)
            try:
                async with RedisBackend(fresh_client, operation_timeout=deadline) as fresh:
                    fresh_registry = BreakerRegistry(
                        backend=fresh,
                        default_config=BreakerConfig(on_backend_error=policy),  # type: ignore[arg-type]
                    )
                    fresh_registry.get("payments")
                    fresh_app = health_app(
                        registry=fresh_registry, dlq=DeadLetterQueue(fresh, name="h")
                    )
                    for path in ENDPOINTS:
                        cells = [policy, f"`{path}`"]
                        for target in (fresh_app, app):
                            started = time.perf_counter()
                            status = await _asgi_get(target, path)
                            cells.append(f"{_ms(time.perf_counter() - started)} ({status})")
                        health_rows.append(cells)
            finally:
                await fresh_client.aclose()

            returned = time.perf_counter()
            proxy.set_mode(Mode.PASS)
            # poll like a caller would: a call every millisecond until a remote decision
            first_remote = 0.0
            while time.perf_counter() - returned < 30:
                outcome = await _guarded(breaker)
                if policy == "fail_closed" and outcome == "ran":
                    first_remote = time.perf_counter() - returned
                    break
                if policy == "fail_open" and recovered:
                    first_remote = recovered[0] - returned
                    break
                await asyncio.sleep(0.001)
            recovery = f"{policy}: {_ms(first_remote)} ms"
    finally:
        await client.aclose()
    return decisions, health_rows, recovery


async def main(smoke: bool) -> str:
    calls = 100 if smoke else 1000
    timeout = 0.2 if smoke else 1.0
    server = RedisServer(free_port()).start()
    try:
        with FaultProxy(server.port) as proxy:
            results = [
                await bench_policy(proxy, p, calls, timeout) for p in ("fail_open", "fail_closed")
            ]
    finally:
        server.cleanup()
    decisions = markdown_table(
        ["policy", "first call, ms", f"next {calls}: p50 µs", "p99 µs", "outcomes"],
        [r[0] for r in results],
    )
    health = markdown_table(
        ["policy", "endpoint", "first request, ms (status)", "once detected, ms (status)"],
        [row for r in results for row in r[1]],
    )
    recovery = "; ".join(r[2] for r in results)
    return (
        f"## Redis black-holed (operation_timeout={timeout:g} s, client without socket "
        "timeout)\n\n"
        f"Guarded calls (a no-op body; the breaker's view was CLOSED):\n\n{decisions}\n\n"
        f"Health endpoints (direct ASGI calls):\n\n{health}\n\n"
        f"From Redis's return to the first remote decision: {recovery}.\n"
    )
