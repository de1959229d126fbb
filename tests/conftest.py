"""Shared fixtures.

``backend_kind`` parametrizes the breaker suite over every backend. Each kind builds a fresh
backend whose time is driven by the test's :class:`~aioresil.testing.FakeClock`, so no test
sleeps for real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from aioresil import BreakerConfig, CircuitBreaker, MemoryBackend
from aioresil.testing import FakeClock

from .servers import RedisServer, free_port

# The real-server kind carries the redis_server marker: `-m "not redis_server"` skips it
# without starting Redis.
BACKEND_KINDS = ["memory", "fakeredis", pytest.param("redis", marks=pytest.mark.redis_server)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def backend(
    backend_kind: str, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A fresh backend of ``backend_kind`` whose scripts take "now" from the fake clock."""
    if backend_kind == "memory":
        yield MemoryBackend()
        return
    from aioresil import RedisBackend

    if backend_kind == "fakeredis":
        import fakeredis

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        async with RedisBackend(client, clock=clock) as redis_backend:
            yield redis_backend
        await client.aclose()
        return
    if backend_kind == "redis":
        url = request.getfixturevalue("redis_url")
        # A generous deadline: these suites test semantics on a shared, slow machine; the
        # deadline itself (1 s by default) is tested under faults in test_faults.py.
        async with RedisBackend.from_url(url, clock=clock, operation_timeout=10) as redis_backend:
            yield redis_backend
        return
    raise AssertionError(f"unknown backend kind {backend_kind}")  # pragma: no cover


MakeBreaker = Callable[..., CircuitBreaker]


@pytest.fixture
def make_breaker(backend: Any, clock: FakeClock) -> MakeBreaker:
    """``make_breaker(name="b", **config_fields)`` on the test's backend and fake clock."""

    def make(name: str = "b", **fields: Any) -> CircuitBreaker:
        return CircuitBreaker(name, config=BreakerConfig(**fields), backend=backend, clock=clock)

    return make


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` for the whole session, on a free loopback port."""
    server = RedisServer(free_port()).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, flushed before the test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
        client.script_flush()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` only this test uses (for restarts and kills)."""
    server = RedisServer(free_port()).start()
    try:
        yield server
    finally:
        server.cleanup()
