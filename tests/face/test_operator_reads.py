"""Operator reads cost at most the round trips issue 17 allows, counted with ``MONITOR`` on a
real ``redis-server``: ``/health/circuit-breakers`` and ``/metrics`` one round trip whatever
the number of breakers, every dashboard API read at most two whatever the page size.

``MONITOR`` lists every command the server runs, pipelined ones included; commands a Lua
script runs are listed too, marked ``lua``, and are not round trips. So the count below (one
per client command) is an upper bound of the round trips.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, DeadLetterQueue, RedisBackend
from aioresil.dashboard import dashboard_app
from aioresil.health import health_app

from ..monitor import Monitor, client_commands

SLOW_OK = 10.0
"""MONITOR slows Redis down a lot on a shared machine: these tests count round trips, so a
generous deadline keeps a slow reply from being taken for an outage (faults: test_faults.py)."""

pytestmark = pytest.mark.redis_server


@pytest.fixture
def monitor(redis_url: str) -> Iterator[Monitor]:
    mon = Monitor(redis_url)
    try:
        yield mon
    finally:
        mon.close()


async def get(app: Any, path: str) -> tuple[int, bytes]:
    status, body = 0, b""
    target, _, query = path.partition("?")
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
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


async def count(monitor: Monitor, app: Any, path: str) -> list[str]:
    async def request() -> None:
        status, body = await get(app, path)
        assert status == 200, (path, status, body[:300])

    return client_commands(await monitor.during(request))


@pytest.mark.parametrize("breakers", [10, 300])
async def test_health_and_metrics_read_every_breaker_in_one_round_trip(
    redis_url: str, monitor: Monitor, breakers: int
) -> None:
    async with RedisBackend.from_url(redis_url, listen=False, operation_timeout=SLOW_OK) as backend:
        registry = BreakerRegistry(backend=backend, default_config=BreakerConfig())
        for i in range(breakers):
            async with registry.get(f"svc-{i}"):
                pass
        app = health_app(registry=registry)
        for path in ("/health/circuit-breakers", "/metrics"):
            await get(app, path)  # warm: scripts loaded, connections open
            commands = await count(monitor, app, path)
            assert len(commands) == 1, (path, commands)
            assert commands[0].startswith("EVALSHA"), commands


@pytest.mark.parametrize("entries", [5, 120])
async def test_dashboard_reads_take_at_most_two_round_trips(
    redis_url: str, monitor: Monitor, entries: int
) -> None:
    async with RedisBackend.from_url(redis_url, listen=False, operation_timeout=SLOW_OK) as backend:
        registry = BreakerRegistry(backend=backend)
        for i in range(50):
            async with registry.get(f"svc-{i}"):
                pass
        dlq = DeadLetterQueue(backend, name="ops")
        for i in range(entries):
            await dlq.push(task_type="mail", payload={"n": i}, error=ValueError(f"e{i}"))
        one = (await dlq.list(limit=1)).entries[0]
        app = dashboard_app(registry=registry, dlq=dlq)
        paths = [
            "/api/config",
            "/api/breakers",
            "/api/dlq/stats",
            "/api/dlq/entries?limit=100",
            "/api/dlq/entries?limit=10&type=mail",
            f"/api/dlq/entries/{one.id}",
        ]
        for path in paths:
            await get(app, path)
            commands = await count(monitor, app, path)
            assert len(commands) <= 2, (path, commands)
