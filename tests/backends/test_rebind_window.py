"""A shared breaker whose config in force changes its window shape starts its window afresh.

The binding rule ("the newest process to bind a name wins; every process runs under its
config") replaces the stored config; the window key holds outcomes measured under the old
one, as a string ring (count window) or a hash of buckets (time window). These tests bind a
name from two backends (two processes' worth of state: separate handles, views and decoded
configs) on a real redis-server and check that every shape change leaves a window that the
new rules can use: count -> time, time -> count, a count window that shrinks, a time window
whose duration changes. Each failed before ``breaker.lua`` cleared the window on such a
bind: ``WRONGTYPE`` on every call of the new process (its outcomes lost, its reads 503), or a
ring that never wrapped, or buckets of the old width that the new one kept writing into.

The readers are checked too: a process whose own config keeps no time window (or another
one) reads the window of the config *stored* with the breaker.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, CircuitBreaker, RedisBackend
from aioresil.events import BreakerConfigConflict
from aioresil.testing import FakeClock

from ..helpers import fail, succeed

pytestmark = pytest.mark.redis_server


def rate(**window: Any) -> BreakerConfig:
    return BreakerConfig(failure_rate_threshold=0.9, minimum_calls=2, **window)


@pytest.fixture
async def backends(redis_url: str, clock: FakeClock) -> AsyncIterator[list[RedisBackend]]:
    """Two backends on one server and one clock: process A and process B."""
    async with (
        RedisBackend.from_url(redis_url, clock=clock, operation_timeout=10) as a,
        RedisBackend.from_url(redis_url, clock=clock, operation_timeout=10) as b,
    ):
        yield [a, b]


def bind(backend: RedisBackend, clock: FakeClock, config: BreakerConfig) -> CircuitBreaker:
    return BreakerRegistry(backend=backend, clock=clock).get("x", config)


async def calls(breaker: CircuitBreaker, pattern: str) -> None:
    """Run one call per character: ``s`` succeeds, ``f`` fails."""
    for c in pattern:
        await (succeed(breaker) if c == "s" else fail(breaker))


async def window_key(backend: RedisBackend) -> tuple[bytes, Any]:
    client = backend.client
    key = backend.key("cb", "x", "window")
    kind = await client.type(key)
    kind = kind if isinstance(kind, bytes) else str(kind).encode()
    if kind == b"string":
        return kind, await client.get(key)
    if kind == b"hash":
        return kind, await client.hgetall(key)
    return kind, None


async def test_count_to_time_window(backends: list[RedisBackend], clock: FakeClock) -> None:
    a, b = backends
    old = bind(a, clock, rate(window_size=10))
    await calls(old, "sf")
    new = bind(b, clock, rate(window_duration=10.0))
    conflicts: list[Any] = []
    new.add_listener(lambda e: conflicts.append(e) if isinstance(e, BreakerConfigConflict) else 0)
    await calls(new, "sff")

    kind, _ = await window_key(b)
    assert kind == b"hash"
    stats = await new.stats()
    # every outcome counted; the window holds only what the new rules measured
    assert (stats.success_count, stats.failure_count) == (2, 3)
    assert stats.failure_rate == pytest.approx(2 / 3)
    # the old process reads the stored (time) window, not its own count window
    assert (await old.stats()).failure_rate == pytest.approx(2 / 3)
    [event] = conflicts
    assert event.window_restarted and event.replaced == old.config.fingerprint

    from aioresil.health import health_app

    from ..face.test_operator_reads import get

    for backend in (a, b):
        registry = BreakerRegistry(backend=backend, clock=clock)
        registry.get("x", old.config if backend is a else new.config)
        status, body = await get(health_app(registry=registry), "/health/circuit-breakers")
        assert status == 200, body
        row = json.loads(body)["circuit_breakers"]["x"]
        assert row["failure_rate"] == pytest.approx(2 / 3)


async def test_time_to_count_window(backends: list[RedisBackend], clock: FakeClock) -> None:
    a, b = backends
    old = bind(a, clock, rate(window_duration=10.0))
    await calls(old, "sff")
    new = bind(b, clock, rate(window_size=4))
    await calls(new, "ssf")

    kind, ring = await window_key(b)
    assert (kind, ring) == (b"string", b"001")
    stats = await new.stats()
    assert (stats.success_count, stats.failure_count) == (3, 3)
    assert stats.failure_rate == pytest.approx(1 / 3)
    assert (await old.stats()).failure_rate == pytest.approx(1 / 3)


async def test_count_window_shrinks(backends: list[RedisBackend], clock: FakeClock) -> None:
    a, b = backends
    old = bind(a, clock, rate(window_size=10))
    await calls(old, "s" * 7)  # the ring's position is 7
    new = bind(b, clock, rate(window_size=4))
    await calls(new, "s" * 30 + "f")

    kind, ring = await window_key(b)
    assert kind == b"string" and len(ring) == 4  # it wraps at the new size
    stats = await new.stats()
    assert stats.failure_rate == pytest.approx(1 / 4)  # over the last 4 calls, not 38
    assert stats.success_count == 37


async def test_time_window_duration_changes(backends: list[RedisBackend], clock: FakeClock) -> None:
    a, b = backends
    old = bind(a, clock, rate(window_duration=10.0))  # 1-second buckets
    await calls(old, "ssff")
    new = bind(b, clock, rate(window_duration=100.0))  # 10-second buckets
    await calls(new, "ssf")

    kind, buckets = await window_key(b)
    width_us = 10_000_000
    assert kind == b"hash"
    assert set(buckets) == {str(round(clock.monotonic() * 1e6) // width_us).encode()}
    assert (await new.stats()).failure_rate == pytest.approx(1 / 3)
    clock.advance(50.0)  # B's buckets are 10 s wide: still in the window
    await calls(new, "s")
    assert (await new.stats()).failure_rate == pytest.approx(1 / 4)


async def test_same_shape_keeps_the_window(backends: list[RedisBackend], clock: FakeClock) -> None:
    """A new config that keeps the window's shape (here: another threshold) keeps its calls."""
    a, b = backends
    old = bind(a, clock, rate(window_size=10))
    await calls(old, "sf")
    new = bind(b, clock, BreakerConfig(failure_rate_threshold=0.8, minimum_calls=2, window_size=10))
    conflicts: list[Any] = []
    new.add_listener(lambda e: conflicts.append(e) if isinstance(e, BreakerConfigConflict) else 0)
    await calls(new, "f")
    assert (await new.stats()).failure_rate == pytest.approx(2 / 3)
    [event] = conflicts
    assert not event.window_restarted


async def test_memory_breaker_has_no_stored_window_to_outlive_its_config() -> None:
    """The memory backend keeps one config per name for the backend's life (a new config is
    refused) and a new backend starts with an empty window: nothing to clear."""
    from aioresil import MemoryBackend

    backend = MemoryBackend()
    breaker = BreakerRegistry(backend=backend).get("x", rate(window_size=10))
    await calls(breaker, "s" * 7)
    with pytest.raises(ValueError, match="different config"):
        backend.bind_breaker("x", rate(window_duration=10.0))
    fresh = BreakerRegistry(backend=MemoryBackend()).get("x", rate(window_size=4))
    await calls(fresh, "sssf")
    assert (await fresh.stats()).failure_rate == pytest.approx(1 / 4)


async def test_a_window_left_in_another_shape_is_repaired(
    backends: list[RedisBackend], clock: FakeClock
) -> None:
    """What a writer without the rebind rule (an older aioresil mid-upgrade) may have left: a
    ring where a time window belongs, a bucket hash where a ring belongs, a ring run past its
    size. Reads do not fail on it, and the next call starts the window afresh."""
    a, b = backends
    timed = bind(a, clock, rate(window_duration=10.0))
    await calls(timed, "sf")
    key = a.key("cb", "x", "window")
    await a.client.set(key, b"0101010")  # a count window's ring
    assert (await timed.stats()).failure_rate is None  # read as empty, not WRONGTYPE
    await calls(timed, "sf")
    assert (await timed.stats()).failure_rate == pytest.approx(1 / 2)

    await a.client.delete(a.key("cb", "x", "state"), key)
    counted = bind(b, clock, rate(window_size=4))
    await calls(counted, "sf")
    await b.client.delete(key)
    await b.client.hset(key, "1000", "3 2 0")  # a time window's buckets
    await calls(counted, "ss")
    assert (await counted.stats()).failure_rate == 0.0  # the 2 calls since the repair
    await calls(counted, "f")
    assert (await counted.stats()).failure_rate == pytest.approx(1 / 3)
    assert (await window_key(b))[1] == b"001"
