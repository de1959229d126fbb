"""The Redis backend itself: key layout, round trips, batching, the pool, faults, corrupt data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from redis.crc import key_slot

from aioresil import (
    BackendFailover,
    BackendRecovered,
    BackendState,
    BackendUnavailableError,
    BreakerConfig,
    BreakerRegistry,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    RedisBackend,
)
from aioresil.backends.breaker_schema import Field
from aioresil.backends.keys import decode_name, encode_name
from aioresil.testing import EventRecorder, FakeClock

from ..helpers import Boom, eventually, fail, rejected, succeed, until, wait_for_subscribers
from ..servers import RedisServer
from ..wire_spy import WireSpy

pytestmark = pytest.mark.redis_server


@pytest.fixture
async def backend(redis_url: str, clock: FakeClock) -> AsyncIterator[RedisBackend]:
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as b:
        yield b


# ---------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "name", ["plain", "a:b", "{tag}", "}{", "with space", "ünïcødé ✓", "%41", "a%3Ab"]
)
def test_names_are_encoded_reversibly_and_safely(name: str) -> None:
    encoded = encode_name(name)
    assert decode_name(encoded) == name
    assert not set(encoded) & set(":{} \t\n")


def test_distinct_names_never_share_keys(redis_url: str) -> None:
    names = ["a", "a:b", "a%3Ab", "{a}", "a}", "a b", "a\u00e9", "A"]
    backend = RedisBackend(aioredis.Redis.from_url(redis_url), listen=False)
    keys = {n: backend.key("cb", n, "state") for n in names}
    assert len(set(keys.values())) == len(names)


@pytest.mark.parametrize("name", ["x", "a:{b}:c", "}weird{", "名前"])
def test_each_breakers_keys_share_one_cluster_slot(name: str, redis_url: str) -> None:
    backend = RedisBackend(aioredis.Redis.from_url(redis_url), listen=False)
    handle = backend.bind_breaker(name, BreakerConfig())
    slots = {key_slot(k.encode()) for k in handle.keys}
    assert len(slots) == 1
    assert all(k.startswith("aioresil:{cb:") for k in handle.keys)


@pytest.mark.parametrize("prefix", ["", "has space", "{x}", "a" * 65])
def test_bad_prefix_is_rejected(prefix: str, redis_url: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend(aioredis.Redis.from_url(redis_url), prefix=prefix)


def test_bad_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(ValueError) as info:
        RedisBackend.from_url("nope://user:s3cret@host:1/0")
    assert "s3cret" not in str(info.value)


def test_bad_pool_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        RedisBackend.from_url("redis://127.0.0.1:1/0", max_connections=0)
    with pytest.raises(ValueError, match="pool_timeout"):
        RedisBackend.from_url("redis://127.0.0.1:1/0", pool_timeout=0)


def test_binding_one_name_with_two_configs_is_an_error(backend: RedisBackend) -> None:
    CircuitBreaker("dup", config=BreakerConfig(failure_threshold=2), backend=backend)
    with pytest.raises(ValueError, match="different config"):
        CircuitBreaker("dup", config=BreakerConfig(failure_threshold=3), backend=backend)


# ---------------------------------------------------------------------- round trips


async def test_strict_mode_costs_one_round_trip_per_call_and_none_per_rejection(
    backend: RedisBackend, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(
        "rt",
        config=BreakerConfig(failure_threshold=3, recovery_timeout=60),
        backend=backend,
        clock=clock,
    )
    await succeed(breaker)  # first call learns the state (acquire + record)
    spy = WireSpy(backend.client)
    for _ in range(10):
        await succeed(breaker)
    assert spy.count() == 10
    assert spy.count("EVALSHA") == 10
    for _ in range(3):
        await fail(breaker)
    assert breaker.state is CircuitState.OPEN
    spy.reset()
    for _ in range(25):
        await rejected(breaker)
    assert spy.count() == 0, spy.commands
    stats = await breaker.stats()  # the locally counted rejections are not lost
    assert stats.rejected_calls == 25


async def test_batched_mode_makes_no_round_trip_inline_and_keeps_exact_counts(
    redis_url: str, clock: FakeClock
) -> None:
    config = BreakerConfig(failure_threshold=1000, recording="batched", batch_interval=0.05)
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as backend:
        breaker = CircuitBreaker("batch", config=config, backend=backend, clock=clock)
        await succeed(breaker)
        await backend.bind_breaker("batch", config).flush()
        spy = WireSpy(backend.client)
        for _ in range(500):
            await succeed(breaker)
        assert spy.count() == 0, "outcomes are buffered, not sent inline"
        # the flusher runs every batch_interval: wait for it, then check it batched
        await eventually(lambda: spy.count("EVALSHA") >= 1, what="a timed flush")
        assert 1 <= spy.count("EVALSHA") <= 3
        for _ in range(7):
            await fail(breaker)
        stats = await breaker.stats()
        assert (stats.success_count, stats.failure_count) == (501, 7)
        assert stats.consecutive_failures == 7
    # close flushes what is left
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as backend:
        breaker = CircuitBreaker("batch", config=config, backend=backend, clock=clock)
        await succeed(breaker)
        for _ in range(9):
            await succeed(breaker)
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as backend:
        stats = await CircuitBreaker("batch", config=config, backend=backend).stats()
        assert stats.success_count == 511


async def test_batched_failures_trip_the_shared_circuit(redis_url: str, clock: FakeClock) -> None:
    config = BreakerConfig(failure_threshold=5, recording="batched", batch_interval=10)
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as backend:
        breaker = CircuitBreaker("bt", config=config, backend=backend, clock=clock)
        for _ in range(5):
            await fail(breaker)
        # a failure is flushed at once, not after batch_interval (10 s; 5 s only bounds a hang)
        await until(lambda: breaker.state is CircuitState.OPEN, within=5, what="the trip")
        assert breaker.state is CircuitState.OPEN
        assert (await breaker.stats()).failure_count == 5


# ---------------------------------------------------------------------- the pool


async def test_a_thousand_concurrent_calls_wait_for_connections_instead_of_failing(
    redis_url: str,
) -> None:
    # A generous deadline: 2,000 script calls queue on 8 connections, and on a loaded 2-core
    # machine the last ones wait longer than the default 1 s (the pool wait is inside it).
    async with RedisBackend.from_url(
        redis_url, max_connections=8, listen=False, operation_timeout=10.0
    ) as backend:
        breaker = CircuitBreaker(
            "pool", config=BreakerConfig(failure_threshold=10_000), backend=backend
        )
        done = 0

        async def call() -> None:
            nonlocal done
            async with breaker:
                await asyncio.sleep(0)  # a yield inside the block: the 1,000 overlap
            done += 1

        await asyncio.gather(*(call() for _ in range(1000)))
        assert done == 1000
        assert (await breaker.stats()).success_count == 1000


async def test_a_users_raising_pool_is_guarded_too(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, max_connections=5)  # raises when exhausted
    try:
        backend = RedisBackend(client, listen=False)
        breaker = CircuitBreaker(
            "userpool", config=BreakerConfig(failure_threshold=10_000), backend=backend
        )
        await asyncio.gather(*(succeed(breaker) for _ in range(300)))
        assert (await breaker.stats()).success_count == 300
        await backend.aclose()
        assert await client.ping()  # a client we were given is never closed
    finally:
        await client.aclose()


async def test_pool_timeout_raises_our_error(redis_url: str) -> None:
    async with RedisBackend.from_url(
        redis_url, max_connections=1, pool_timeout=0.05, listen=False
    ) as backend:
        pool = backend.client.connection_pool
        held = await pool.get_connection()
        try:
            config = BreakerConfig(on_backend_error="fail_closed")
            breaker = CircuitBreaker("pt", config=config, backend=backend)
            with pytest.raises(BackendUnavailableError) as info:
                await succeed(breaker)
            assert type(info.value).__name__ == "PoolTimeoutError"
        finally:
            await pool.release(held)


# ---------------------------------------------------------------------- faults


async def test_fail_open_judges_locally_during_an_outage_and_recovers(
    own_redis_server: RedisServer,
) -> None:
    events = EventRecorder()
    config = BreakerConfig(failure_threshold=3, recovery_timeout=60)
    async with RedisBackend.from_url(
        own_redis_server.url, socket_timeout=1, socket_connect_timeout=0.5
    ) as backend:
        breaker = CircuitBreaker("fo", config=config, backend=backend)
        breaker.add_listener(events)
        await succeed(breaker)
        own_redis_server.stop()
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            await succeed(breaker)  # goes through, judged by the local fallback
            for _ in range(3):
                await fail(breaker)
            await rejected(breaker)  # the local fallback opened
        assert time.monotonic() - started < 5, "no call hangs on a dead server"
        assert any(e["event"] == "circuit_backend_unavailable" for e in logs)
        assert len(events.of_type(BackendFailover)) == 1
        assert events.of_type(BackendFailover)[0].policy == "fail_open"
        own_redis_server.start()  # empty, script cache flushed

        async def recovered() -> bool:  # each poll is a call: the fallback pings Redis
            try:
                async with breaker:
                    pass
            except CircuitOpenError:
                pass
            return bool(events.of_type(BackendRecovered))

        await eventually(recovered, within=10, interval=0.2, what="BackendRecovered")
        await succeed(breaker)  # shared state again (NOSCRIPT reloaded transparently)
        stats = await breaker.stats()
        assert stats.state is CircuitState.CLOSED
        assert stats.success_count >= 1


async def test_fail_closed_refuses_calls_during_an_outage_and_recovers(
    own_redis_server: RedisServer,
) -> None:
    events = EventRecorder()
    config = BreakerConfig(on_backend_error="fail_closed")
    async with RedisBackend.from_url(
        own_redis_server.url, socket_timeout=1, socket_connect_timeout=0.5
    ) as backend:
        breaker = CircuitBreaker("fc", config=config, backend=backend)
        breaker.add_listener(events)
        await succeed(breaker)
        own_redis_server.stop()
        await succeed(breaker)  # this call ran; recording it failed (logged, not raised)
        ran = False
        with pytest.raises(BackendUnavailableError):
            async with breaker:
                ran = True
        assert not ran
        assert [e.policy for e in events.of_type(BackendFailover)] == ["fail_closed"]
        own_redis_server.start()
        # calls are decided locally until the backend's probe reaches Redis again
        await until(lambda: backend.health.state is BackendState.HEALTHY)
        await succeed(breaker)
        assert len(events.of_type(BackendRecovered)) == 1
        assert (await breaker.stats()).state is CircuitState.CLOSED


async def test_user_exception_survives_a_recording_failure(
    own_redis_server: RedisServer,
) -> None:
    config = BreakerConfig(on_backend_error="fail_closed")
    async with RedisBackend.from_url(
        own_redis_server.url, socket_timeout=1, socket_connect_timeout=0.5
    ) as backend:
        breaker = CircuitBreaker("ux", config=config, backend=backend)
        await succeed(breaker)
        own_redis_server.stop()
        error = Boom("mine")
        with pytest.raises(Boom) as info:
            async with breaker:
                raise error
        assert info.value is error
    own_redis_server.start()


async def test_script_cache_flush_is_transparent(backend: RedisBackend, clock: FakeClock) -> None:
    breaker = CircuitBreaker("flush", backend=backend, clock=clock)
    await succeed(breaker)
    await backend.client.script_flush()
    await succeed(breaker)
    assert (await breaker.stats()).success_count == 2


# ---------------------------------------------------------------------- corrupt data


async def test_corrupt_state_is_reset_by_the_next_change_not_crash_looped(
    backend: RedisBackend, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(
        "bad", config=BreakerConfig(failure_threshold=2), backend=backend, clock=clock
    )
    await fail(breaker)
    key = backend.key("cb", "bad", "state")
    await backend.client.hset(key, mapping={Field.STATE: "exploded", Field.SCHEMA: "99"})
    with structlog.testing.capture_logs() as logs:
        await fail(breaker)  # its permit predates the reset: counted, but judges nothing
    assert any(e["event"] == "circuit_state_corrupt_reset" for e in logs)
    assert (await breaker.stats()).state is CircuitState.CLOSED
    await fail(breaker)
    await fail(breaker)
    stats = await breaker.stats()
    assert stats.state is CircuitState.OPEN  # it works again, from a clean record


async def test_stats_of_unreadable_state_name_the_breaker(backend: RedisBackend) -> None:
    from aioresil import CorruptStateError

    breaker = CircuitBreaker("garbled", backend=backend)
    await backend.client.hset(
        backend.key("cb", "garbled", "state"),
        mapping={Field.SCHEMA: "1", Field.STATE: "nonsense", Field.GENERATION: "3"},
    )
    with pytest.raises(CorruptStateError, match="garbled"):
        await breaker.stats()


# ---------------------------------------------------------------------- fleet view


async def test_a_transition_reaches_another_process_view_without_a_call(
    redis_url: str,
) -> None:
    config = BreakerConfig(failure_threshold=2, recovery_timeout=60)
    async with RedisBackend.from_url(redis_url) as one, RedisBackend.from_url(redis_url) as two:
        a = CircuitBreaker("fleet", config=config, backend=one)
        b = CircuitBreaker("fleet", config=config, backend=two)
        await succeed(a)
        await succeed(b)  # starts b's listener
        await wait_for_subscribers(two, 2)
        await fail(a)
        await fail(a)
        # Polling on purpose: we watch a view that pub/sub updates, with no event to await.
        await until(lambda: b.state is CircuitState.OPEN, within=2, what="b's view opening")
        spy = WireSpy(two.client)
        error = await rejected(b)
        assert error.retry_after is not None and 50 < error.retry_after <= 60
        assert spy.count() == 0


async def test_registry_on_redis_reads_all_breakers(
    backend: RedisBackend, clock: FakeClock
) -> None:
    registry = BreakerRegistry(backend=backend, clock=clock)
    for i in range(20):
        await succeed(registry.get(f"svc-{i}"))
    await fail(registry.get("svc-3"))
    await registry.stats()  # the first read loads breaker_read.lua (SCRIPT LOAD + retry)
    spy = WireSpy(backend.client)
    pipelines = 0
    make_pipeline = backend.client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return make_pipeline(*args, **kwargs)

    backend.client.pipeline = counting_pipeline  # type: ignore[method-assign]
    stats = await registry.stats()
    assert (spy.count("EVALSHA"), spy.count(), pipelines) == (1, 1, 0), (
        "one read script for every breaker: 1,000 breakers would still be one round trip"
    )
    assert len(stats) == 20
    assert all(s.success_count == 1 for s in stats.values())
    assert stats["svc-3"].failure_count == 1


async def test_fail_open_recovers_even_when_every_call_succeeds(
    own_redis_server: RedisServer,
) -> None:
    """The recovery ping is timed on the handle's clock, not on the hot path's ``now=0``."""
    events = EventRecorder()
    async with RedisBackend.from_url(
        own_redis_server.url, socket_timeout=1, socket_connect_timeout=0.5
    ) as backend:
        breaker = CircuitBreaker("only-ok", backend=backend)
        breaker.add_listener(events)
        await succeed(breaker)
        own_redis_server.stop()
        await succeed(breaker)  # the record fails: fail-open starts
        assert events.of_type(BackendFailover)
        own_redis_server.start()

        async def recovered() -> bool:  # each poll is a successful call
            await succeed(breaker)
            return bool(events.of_type(BackendRecovered))

        await eventually(recovered, within=10, interval=0.1, what="BackendRecovered")
        await succeed(breaker)
        assert (await breaker.stats()).success_count >= 1


async def test_batched_outcomes_kept_during_an_outage_reach_redis_after_it(
    own_redis_server: RedisServer,
) -> None:
    config = BreakerConfig(recording="batched", batch_interval=0.05)
    events = EventRecorder()
    async with RedisBackend.from_url(
        own_redis_server.url, socket_timeout=1, socket_connect_timeout=0.5
    ) as backend:
        breaker = CircuitBreaker("kept", config=config, backend=backend)
        breaker.add_listener(events)
        for _ in range(3):
            await succeed(breaker)  # buffered
        own_redis_server.stop()
        # the timed flush fails: outage (polled: the flush runs in the background)
        await until(lambda: events.of_type(BackendFailover), within=10, what="BackendFailover")
        own_redis_server.start()

        async def recovered() -> bool:
            await succeed(breaker)  # judged by the fallback, pings Redis
            return bool(events.of_type(BackendRecovered))

        await eventually(recovered, within=10, interval=0.1, what="BackendRecovered")
        key = backend.key("cb", "kept", "state")

        async def flushed() -> int:
            return int(await backend.client.hget(key, Field.SUCCESSES) or 0)

        async def three_flushed() -> bool:
            return await flushed() >= 3

        # the three kept outcomes are flushed without any stats(), failure or close
        await eventually(three_flushed, what="the kept outcomes reaching Redis")
        assert await flushed() >= 3
        assert events.of_type(BackendFailover) and events.of_type(BackendRecovered)


async def test_an_unreadable_breaker_does_not_stop_the_listener_for_the_others(
    redis_url: str,
) -> None:
    config = BreakerConfig(failure_threshold=1, recovery_timeout=60)
    async with RedisBackend.from_url(redis_url) as one, RedisBackend.from_url(redis_url) as two:
        CircuitBreaker("bad", backend=two)
        await two.client.hset(
            two.key("cb", "bad", "state"), mapping={Field.SCHEMA: "1", Field.STATE: "??"}
        )
        watcher = CircuitBreaker("good", config=config, backend=two)
        await succeed(watcher)  # starts two's listener, which resyncs every view
        await wait_for_subscribers(two, 1)
        await fail(CircuitBreaker("good", config=config, backend=one))
        await eventually(
            lambda: watcher.state is CircuitState.OPEN, what="the transition reaching two"
        )
        assert watcher.state is CircuitState.OPEN
        assert (await watcher.stats()).state is CircuitState.OPEN
