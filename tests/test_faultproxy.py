"""The fault-injection proxy, against a real ``redis-server``: each mode does what it says."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .faultproxy import FaultProxy, Mode
from .servers import RedisServer, free_port


@pytest.fixture
def proxy(redis_server: RedisServer, redis_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(redis_server.port) as p:
        yield p


def _client(proxy: FaultProxy, timeout: float = 0.3) -> aioredis.Redis:
    # no retries: redis-py 6+ retries 3 times with a backoff of seconds by default
    return aioredis.Redis(
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


async def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    client = _client(proxy)
    try:
        assert await client.set("k", "v") is True
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


async def test_blackhole_keeps_the_connection_open_and_drops_bytes(
    proxy: FaultProxy, redis_server: RedisServer
) -> None:
    client = _client(proxy)
    direct = redis.Redis(port=redis_server.port)
    try:
        await client.ping()
        proxy.set_mode(Mode.BLACKHOLE)
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.set("bh", "1")
        assert direct.get("bh") is None  # the command never reached the server
        # a new connection is accepted (no refusal) and then hangs as well
        accepted = proxy.accepted
        fresh = _client(proxy)
        with pytest.raises(redis.exceptions.TimeoutError):
            await fresh.ping()
        await fresh.aclose()
        assert proxy.accepted > accepted
        proxy.set_mode(Mode.PASS)
        assert await client.ping() is True  # redis-py reconnected after its timeout
    finally:
        direct.close()
        await client.aclose()


async def test_drop_replies_runs_the_command_but_loses_the_answer(
    proxy: FaultProxy, redis_server: RedisServer
) -> None:
    client = _client(proxy)
    direct = redis.Redis(port=redis_server.port)
    try:
        await client.ping()
        proxy.set_mode(Mode.DROP_REPLIES)
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.set("dr", "1")
        assert direct.get("dr") == b"1"
        proxy.set_mode(Mode.PASS)
        assert await client.get("dr") == b"1"
    finally:
        direct.close()
        await client.aclose()


async def test_latency_delays_each_reply(proxy: FaultProxy) -> None:
    client = _client(proxy)
    try:
        await client.ping()
        proxy.set_mode(Mode.LATENCY, latency=0.05)
        started = time.monotonic()
        assert await client.ping() is True
        # a lower bound only (the added delay is a floor, never a ceiling on a busy machine)
        assert time.monotonic() - started >= 0.05
    finally:
        await client.aclose()


async def test_reset_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    client = _client(proxy, 5)
    try:
        await client.ping()
        assert proxy.open_connections == 1
        proxy.set_mode(Mode.RESET)
        assert proxy.open_connections == 0
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
        proxy.set_mode(Mode.PASS)
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_upstream_down_resets_the_client() -> None:
    with FaultProxy(free_port()) as dead:  # nothing listens upstream
        client = _client(dead, 5)
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.ping()
        finally:
            await client.aclose()
