"""DirectScripts: our own EVALSHA on a pooled connection, on a real redis-server.

What must hold: the bytes are exactly what redis-py would send; a reply (or an error reply)
reads the same as through ``client.evalsha``; a cancelled call never leaves its reply for the
next user of the connection; a dropped connection is retried once through the client; and
clients where routing or a single connection matter keep redis-py's own path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from aioresil import BackendUnavailableError, RedisBackend
from aioresil.backends.scripts import LuaScript
from aioresil.backends.wire import DirectScripts, PackedKeys, pack_key

from ..faultproxy import FaultProxy, Mode
from ..helpers import until
from ..servers import RedisServer
from ..wire_spy import WireSpy

ECHO = LuaScript("echo", "return {KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]}")
SPIN = LuaScript(
    "spin",
    "local t = redis.call('TIME'); local stop = t[1] * 1e6 + t[2] + tonumber(ARGV[1]) "
    "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= stop return ARGV[2]",
)
FAIL = LuaScript("fail", "return redis.error_reply('AIORESIL_TEST bad input')")
INCR = LuaScript("incr", "return redis.call('INCR', KEYS[1])")

pytestmark = pytest.mark.redis_server


def _host_port(url: str) -> dict[str, Any]:
    parsed = urlsplit(url)
    return {"host": parsed.hostname, "port": parsed.port}


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=4, timeout=5)
    c = aioredis.Redis(connection_pool=pool)
    yield c
    await c.aclose(close_connection_pool=True)


@pytest.mark.parametrize(
    ("keys", "args"),
    [
        (["k"], ["a", 1, 2.5, b"\x00\xff"]),
        ([], []),
        (["{tag}:ünï", b"raw"], ["", -7, 1e-300, "✓" * 100]),
    ],
)
def test_pack_is_byte_for_byte_what_redis_py_sends(keys: list[Any], args: list[Any]) -> None:
    direct = DirectScripts(aioredis.ConnectionPool())
    expected = b"".join(Connection().pack_command("EVALSHA", ECHO.sha, len(keys), *keys, *args))
    assert direct.pack(ECHO.sha, keys, args) == expected


def test_packed_keys_pack_as_the_keys_they_hold() -> None:
    direct = DirectScripts(aioredis.ConnectionPool())
    keys = [b"{t}:a", b"{t}:\xc3\xbc", b""]
    packed = PackedKeys(keys, b"".join(pack_key(key) for key in keys))
    assert packed == keys  # a plain list of the keys to every other path
    assert direct.pack(ECHO.sha, packed, ["x", 1]) == direct.pack(ECHO.sha, keys, ["x", 1])


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    direct = DirectScripts(aioredis.ConnectionPool())
    with pytest.raises(TypeError, match="bool"):
        direct.pack(ECHO.sha, ["k"], [True])
    with pytest.raises(TypeError, match="str, int, float or bytes"):
        direct.pack(ECHO.sha, ["k"], [None])


async def test_replies_read_as_through_evalsha_decoded_or_not(redis_url: str) -> None:
    for decode in (False, True):
        c = aioredis.Redis.from_url(redis_url, decode_responses=decode)
        try:
            direct = DirectScripts.for_client(c)
            assert direct is not None
            await c.script_load(ECHO.source)
            args: list[str | int | float] = ["a", 1, 2.5, "ünï"]
            ours = await direct.call(direct.pack(ECHO.sha, ["k"], args))
            theirs = await c.evalsha(ECHO.sha, 1, "k", *args)
            assert ours == theirs
            await c.script_load(FAIL.source)
            with pytest.raises(redis_errors.ResponseError, match="AIORESIL_TEST bad input"):
                await direct.call(direct.pack(FAIL.sha, [], []))
            with pytest.raises(redis_errors.NoScriptError):
                await direct.call(direct.pack("0" * 40, [], []))
        finally:
            await c.aclose()


async def test_a_cancelled_call_leaves_no_reply_for_the_next_user(
    client: aioredis.Redis,
) -> None:
    """The connection of a call cut mid-reply is dropped, never handed on with the reply
    still to come (the next call would read the previous call's answer)."""
    direct = DirectScripts.for_client(client)
    assert direct is not None
    await client.script_load(SPIN.source)
    for attempt in range(10):
        slow = asyncio.create_task(direct.call(direct.pack(SPIN.sha, [], [100_000, "slow"])))
        await asyncio.sleep(0.02)  # most often cut mid-reply (the script spins 100 ms)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # Every connection in the pool answers its own call, not "slow".
        replies = await asyncio.gather(
            *(direct.call(direct.pack(SPIN.sha, [], [0, f"r{attempt}-{i}"])) for i in range(4))
        )
        assert replies == [f"r{attempt}-{i}".encode() for i in range(4)]


async def test_a_killed_connection_is_retried_under_the_clients_policy(redis_url: str) -> None:
    """A client with redis-py's default retries (``Redis(host, port)``; a pool built from a
    URL has none, see the test after the next one)."""
    client = aioredis.Redis(**_host_port(redis_url))
    async with RedisBackend(client, listen=False) as backend:
        assert backend._direct is not None
        assert await backend.run_script(ECHO, ["k"], ["x", 1, 2, 3]) == [
            b"k",
            b"x",
            b"1",
            b"2",
            b"3",
        ]
        admin = aioredis.Redis.from_url(redis_url)
        try:
            killed = await admin.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
        finally:
            await admin.aclose()
        spy = WireSpy(backend.client)
        assert await backend.run_script(ECHO, ["k"], ["y", 1, 2, 3]) == [
            b"k",
            b"y",
            b"1",
            b"2",
            b"3",
        ]
        assert spy.count("EVALSHA") >= 1
        assert backend.state.value == "healthy"  # a dropped connection is not an outage
    await client.aclose()


async def test_a_connection_reset_mid_call_is_sent_again_under_the_clients_policy(
    redis_server: RedisServer,
) -> None:
    """The command is held at a proxy, the proxy resets the connection: our direct call gets
    a ``ConnectionError``, and, on a client whose retry policy sends a command again after one
    (redis-py's default for ``Redis(host, port)``), it is sent again on a new connection, as
    ``execute_command`` would, so the caller sees its reply, not an outage."""
    with FaultProxy(redis_server.port) as proxy:
        client = aioredis.Redis(host="127.0.0.1", port=proxy.port)
        async with RedisBackend(client, listen=False, operation_timeout=10) as backend:
            await backend.run_script(ECHO, ["k"], ["warm", 1, 2, 3])
            spy = WireSpy(backend.client)
            proxy.set_mode(Mode.LATENCY, latency=30.0)  # hold what the client sends
            seen = proxy.requests_seen
            call = asyncio.create_task(backend.run_script(ECHO, ["k"], ["held", 1, 2, 3]))
            await until(lambda: proxy.requests_seen > seen, within=10, what="the call held")
            proxy.set_mode(Mode.RESET)  # RST the held connection: Redis never saw the call
            proxy.set_mode(Mode.PASS)
            assert await call == [b"k", b"held", b"1", b"2", b"3"]
            assert spy.count("EVALSHA") == 2  # the first attempt, then the policy's retry
            assert backend.state.value == "healthy"
        await client.aclose()


async def test_a_client_without_retries_never_gets_a_script_sent_twice(
    redis_server: RedisServer,
) -> None:
    """The reply is lost, not the command: the script ran. The pool ``RedisBackend.from_url``
    builds has no retries (redis-py gives a pool built from a URL none), so
    redis-py sends a script once; the direct path must not send it again either (it did: the
    reset after the lost reply was followed by the same EVALSHA through the client, and the
    script's INCR ran twice)."""
    admin = aioredis.Redis(port=redis_server.port)
    peek = redis.Redis(port=redis_server.port)
    with FaultProxy(redis_server.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with RedisBackend.from_url(url, listen=False, operation_timeout=10) as backend:
            assert backend._direct is not None
            await admin.delete("runs")
            await backend.client.script_load(INCR.source)
            spy = WireSpy(backend.client)
            proxy.set_mode(Mode.DROP_REPLIES)  # the command reaches Redis, its reply does not
            call = asyncio.create_task(backend.run_script(INCR, ["runs"], []))
            # Redis (not the proxy, which runs in its own thread) answers this sync read
            await until(lambda: peek.get("runs") == b"1", what="the script ran")
            proxy.set_mode(Mode.PASS)
            proxy.reset_connections()  # the caller learns it lost its connection
            with pytest.raises(BackendUnavailableError):
                await call
            assert spy.count("EVALSHA") == 1
            assert await admin.get("runs") == b"1"
    await admin.aclose()
    peek.close()


async def test_a_policy_that_does_not_retry_connection_errors_sends_a_script_once(
    redis_server: RedisServer,
) -> None:
    """A client whose retries name only timeouts: after a lost reply and a reset (a
    ``ConnectionError``), the script is not sent again, as with ``client.evalsha``."""
    admin = aioredis.Redis(port=redis_server.port)
    peek = redis.Redis(port=redis_server.port)
    with FaultProxy(redis_server.port) as proxy:
        policy = Retry(NoBackoff(), 3, supported_errors=(redis_errors.TimeoutError,))
        client = aioredis.Redis(host="127.0.0.1", port=proxy.port, retry=policy)
        async with RedisBackend(client, listen=False, operation_timeout=10) as backend:
            assert backend._direct is not None
            await admin.delete("runs")
            await client.script_load(INCR.source)
            spy = WireSpy(client)
            proxy.set_mode(Mode.DROP_REPLIES)
            call = asyncio.create_task(backend.run_script(INCR, ["runs"], []))
            await until(lambda: peek.get("runs") == b"1", what="the script ran")
            proxy.set_mode(Mode.PASS)
            proxy.reset_connections()
            with pytest.raises(BackendUnavailableError):
                await call
            assert spy.count("EVALSHA") == 1
            assert await admin.get("runs") == b"1"
        await client.aclose()
    await admin.aclose()
    peek.close()


async def test_clients_that_route_or_pin_a_connection_keep_redis_pys_path(redis_url: str) -> None:
    single = aioredis.Redis.from_url(redis_url, single_connection_client=True)
    try:
        assert DirectScripts.for_client(single) is None
    finally:
        await single.aclose()

    class Routed:  # what Redis Cluster clients look like to us
        connection_pool = aioredis.ConnectionPool()

        def get_node_from_key(self, key: str) -> None: ...

    assert DirectScripts.for_client(Routed()) is None
    plain = aioredis.Redis.from_url(redis_url)
    try:
        assert DirectScripts.for_client(plain) is not None
    finally:
        await plain.aclose()


@pytest.mark.parametrize("stage", [("{t}:stage", b"\x00v" * 9000, 60_000), None])
@pytest.mark.parametrize("wait", [(1, 250), None])
def test_a_staged_pipeline_is_byte_for_byte_what_redis_pys_pipeline_sends(
    stage: tuple[str, bytes, int] | None, wait: tuple[int, int] | None
) -> None:
    direct = DirectScripts(aioredis.ConnectionPool())
    keys, args = ["{t}:a", "{t}:stage"], ["", 0, b"x"]
    commands: list[tuple[Any, ...]] = []
    if stage is not None:
        commands.append(("SET", stage[0], stage[1], "PX", stage[2]))
    commands.append(("EVALSHA", ECHO.sha, len(keys), *keys, *args))
    if wait is not None:
        commands.append(("WAIT", *wait))
    expected = b"".join(Connection().pack_commands(commands))
    chunks = direct.pack_staged(stage, direct.pack(ECHO.sha, keys, args), wait)
    assert b"".join(chunks) == expected
    if stage is not None:
        assert any(chunk is stage[1] for chunk in chunks)  # the value itself, never copied


async def test_a_staged_pipeline_reads_every_reply_even_after_an_error_reply(
    client: aioredis.Redis,
) -> None:
    """An error reply (``NOSCRIPT``, a script's error) is returned in its place and the replies
    after it are still read, so the connection goes back to the pool with nothing unread."""
    direct = DirectScripts.for_client(client)
    assert direct is not None
    await client.script_load(ECHO.source)
    await client.script_load(FAIL.source)
    for sha in ("0" * 40, FAIL.sha):
        chunks = direct.pack_staged(
            ("staged", b"v" * 20_000, 60_000), direct.pack(sha, [], []), (0, 10)
        )
        set_reply, error, acked = await direct.call_many(chunks, 3)
        assert set_reply in (b"OK", "OK", True)
        assert isinstance(error, redis_errors.ResponseError)
        assert acked == 0
    assert await client.get("staged") == b"v" * 20_000
    # Every pooled connection answers its own call afterwards.
    replies = await asyncio.gather(
        *(direct.call(direct.pack(ECHO.sha, ["k"], [f"r{i}", 1, 2, 3])) for i in range(4))
    )
    assert [reply[1] for reply in replies] == [f"r{i}".encode() for i in range(4)]


async def test_a_staged_script_call_reloads_its_script_once_and_sends_the_value_again(
    redis_url: str,
) -> None:
    stage_then_echo = LuaScript("stage_then_echo", "return {redis.call('GET', KEYS[1]), ARGV[1]}")
    async with RedisBackend.from_url(redis_url, listen=False) as backend:
        assert backend._direct is not None
        await backend.client.script_flush()
        spy = WireSpy(backend.client)
        value = b"s" * 30_000
        reply = await backend.run_script_staged(
            stage_then_echo, ["{t}:stage"], ["a"], stage=("{t}:stage", value, 60_000)
        )
        assert reply == [value, b"a"]
        # NOSCRIPT: loaded, then the whole pipeline (the staged SET too) once more.
        assert spy.writes == [["SET", "EVALSHA"], ["SCRIPT"], ["SET", "EVALSHA"]]
        await backend.client.connection_pool.aclose()
