"""``breaker_read.lua`` reads only what the config a reader already knows needs.

A reader tells the script, per breaker, the fingerprint of the stored config it decoded last
and the window that config keeps; the script then skips the config (about 70 bytes) and, for
a config without a count window, that window's three counters. What must hold: a read that
skipped them gives the same records as a read that sent everything (first read, or the
config changed since), for every window kind and whatever the reader's own config; a config
changed by another process after the reader knew the old one is read afresh, with its
window; and the script asks Redis only for those fields (watched with ``MONITOR``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, CircuitBreaker, RedisBackend
from aioresil.backends.breaker_schema import READ_FIELDS, WINDOW_COUNT_FIELDS, Field
from aioresil.core.machine import BreakerRecord
from aioresil.testing import FakeClock

from ..helpers import fail, succeed
from ..monitor import Monitor

pytestmark = pytest.mark.redis_server

CONFIGS = {
    "none": BreakerConfig(failure_threshold=50),
    "count": BreakerConfig(failure_rate_threshold=0.9, minimum_calls=2, window_size=8),
    "time": BreakerConfig(failure_rate_threshold=0.9, minimum_calls=2, window_duration=10.0),
}


@pytest.fixture
async def backends(redis_url: str, clock: FakeClock) -> AsyncIterator[list[RedisBackend]]:
    """A writer and a reader on one server and one clock (two processes' worth of state)."""
    async with (
        RedisBackend.from_url(redis_url, clock=clock, listen=False) as writer,
        RedisBackend.from_url(redis_url, clock=clock, listen=False) as reader,
    ):
        yield [writer, reader]


def record_of(rec: BreakerRecord) -> dict[str, Any]:
    """Every field of ``rec`` and its window's figures, comparable with ``==``."""
    out = {name: getattr(rec, name) for name in type(rec).__slots__ if name != "window"}
    window = rec.window
    if window is not None:
        out["window"] = (type(window).__name__, window.calls, window.failures, window.slow)
    return out


async def traffic(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(3):
        await succeed(breaker)
        await fail(breaker)
        clock.advance(1.5)


@pytest.mark.parametrize("written", sorted(CONFIGS))
@pytest.mark.parametrize("own", sorted(CONFIGS))
async def test_a_read_that_knows_the_config_equals_one_that_sent_it(
    backends: list[RedisBackend], clock: FakeClock, written: str, own: str
) -> None:
    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS[written])
    await traffic(breaker, clock)
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("x", CONFIGS[own])
    first = [record_of(rec) for _, (rec, _, _) in await registry.readings()]
    again = [record_of(rec) for _, (rec, _, _) in await registry.readings()]
    mine = record_of((await writer.read_breakers([breaker.handle]))[0][0])
    assert first == again == [mine]
    assert first[0]["config"] == CONFIGS[written]
    if written != "none":
        assert first[0]["window"][1:3] == (6, 3)  # the window was read, not left empty


async def test_a_config_changed_after_the_reader_knew_it_is_read_afresh(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    writer, reader = backends
    await traffic(BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["none"]), clock)
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("x", CONFIGS["none"])
    await registry.readings()  # the reader now knows the config "none"
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as third:
        rebound = BreakerRegistry(backend=third, clock=clock).get("x", CONFIGS["time"])
        await traffic(rebound, clock)  # binds "time" (the newest bind wins) and fills it
        expected = record_of((await third.read_breakers([rebound.handle]))[0][0])
    for _ in range(2):  # the new config sent, then known
        [(_, (rec, _, _))] = await registry.readings()
        assert record_of(rec) == expected
        assert rec.config == CONFIGS["time"] and expected["window"][1:3] == (6, 3)


async def test_the_script_asks_only_for_the_fields_the_known_config_needs(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    writer, reader = backends
    registry = BreakerRegistry(backend=reader, clock=clock)
    for kind, config in CONFIGS.items():
        await traffic(BreakerRegistry(backend=writer, clock=clock).get(kind, config), clock)
        registry.get(kind, config)
    monitor = Monitor(redis_url)
    try:
        first = await monitor.during(registry.readings)
        known = await monitor.during(registry.readings)
    finally:
        monitor.close()

    def reads(commands: list[dict[str, Any]]) -> list[list[str]]:
        return [
            c["command"].split()[2:]
            for c in commands
            if c.get("client_type") == "lua" and c["command"].upper().startswith("HMGET")
        ]

    everything = list(READ_FIELDS[: -len(WINDOW_COUNT_FIELDS)])
    rest = [*WINDOW_COUNT_FIELDS, Field.CONFIG]
    assert reads(first) == [everything, rest] * 3, "first read: the stored config is sent"
    assert reads(known) == [  # in registry order: none, count, time
        everything,
        [*everything, *WINDOW_COUNT_FIELDS],
        everything,
    ]


async def test_a_read_answered_before_a_newer_one_keeps_the_config_it_was_read_under(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    """Two reads of one breaker in flight: the first one told the script it knew config A,
    so its row leaves A out; by the time that reply is read, the second read has decoded B
    (rebound meanwhile). The first row is still A's: it must read as A, not as the reader's
    own config (which keeps no window: the count window's figures would be dropped)."""
    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["count"])
    await traffic(breaker, clock)
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("x", CONFIGS["none"])
    await registry.readings()  # the reader now knows the config "count"
    expected = record_of((await writer.read_breakers([breaker.handle]))[0][0])

    held, release = asyncio.Event(), asyncio.Event()
    run_script = reader.run_script

    async def hold_first(script: Any, keys: Any, args: Any) -> Any:
        reply = await run_script(script, keys, args)
        if not held.is_set():
            held.set()
            await release.wait()
        return reply

    reader.run_script = hold_first  # type: ignore[method-assign]
    first = asyncio.create_task(registry.readings())
    await held.wait()
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as third:
        await traffic(BreakerRegistry(backend=third, clock=clock).get("x", CONFIGS["time"]), clock)
    [(_, (newer, _, _))] = await registry.readings()  # decodes "time"
    assert newer.config == CONFIGS["time"]
    release.set()
    [(_, (rec, _, _))] = await first
    assert record_of(rec) == expected
    assert rec.config == CONFIGS["count"] and expected["window"][1:3] == (6, 3)


@pytest.mark.parametrize("counter", WINDOW_COUNT_FIELDS)
@pytest.mark.parametrize("kind", ["none", "time"])
async def test_a_count_counter_the_config_does_not_keep_reads_the_same_on_every_read(
    backends: list[RedisBackend], clock: FakeClock, kind: str, counter: str
) -> None:
    """A count-window counter holding no number in the hash of a breaker whose config keeps
    no count window: breaker.lua never reads it, so the breaker runs as before. Every read
    of it answers the same record, the first (which sends the config, as the CLI's always
    does) as well as the later ones (which skip the counters)."""
    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS[kind])
    await traffic(breaker, clock)
    await writer.client.hset(breaker.handle.keys[0], counter, "x")
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("x", CONFIGS[kind])
    first = [record_of(rec) for _, (rec, _, _) in await registry.readings()]
    again = [record_of(rec) for _, (rec, _, _) in await registry.readings()]
    assert first == again
    assert first[0]["config"] == CONFIGS[kind]
