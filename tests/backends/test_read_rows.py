"""``breaker_read.lua`` reads the row ``breaker.lua`` keeps, and only what else it needs.

Every ``breaker.lua`` call rewrites the breaker's read row (a key of its own holding a
packed copy of the fields a reader needs, ``breaker_schema.ROW_FORMAT``) when one of them
changed; the hot path patches its success counter in place. The reader asks, breaker by
breaker, for what the previous read showed it needs (``READ_ROW``: the row alone, its row key
and its hash, counted; the leases, the buckets or the config besides, two keys more) and reads
again, asking for everything, a breaker whose row needs more; a row whose hash is gone reads
as a breaker never called, with no window.
What must hold: a read that skipped the config gives the same records as a read that sent it
(first read, or the config changed since), for every window kind and whatever the reader's
own config; a config changed by another process after the reader knew the old one is read
afresh, with its window; a breaker that entered HALF_OPEN since a read of its row alone is
read again with its leases; a hash without a row, or with a damaged one, reads as its fields
say; the row is the fields, packed, after every call (the hot path's too); the plain-Lua
packer (fakeredis) writes the bytes Redis' ``struct`` does; and the script asks Redis only
for those fields, with only those keys (watched with ``MONITOR``).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, CircuitBreaker, RedisBackend
from aioresil.backends import breaker_schema
from aioresil.backends.breaker_schema import (
    ROW_NUMBERS,
    WINDOW_COUNT_FIELDS,
    Field,
    breaker_script,
)
from aioresil.core.machine import BreakerRecord
from aioresil.core.states import CircuitState
from aioresil.testing import FakeClock

from ..helpers import fail, packed_row, succeed
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
    mine = await read_of(writer, breaker)
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
        expected = await read_of(third, rebound)
    for _ in range(2):  # the new config sent, then known
        [(_, (rec, _, _))] = await registry.readings()
        assert record_of(rec) == expected
        assert rec.config == CONFIGS["time"] and expected["window"][1:3] == (6, 3)


def lua_commands(commands: list[dict[str, Any]], name: str) -> list[list[str]]:
    """The arguments of the ``name`` commands scripts ran, in order."""
    return [
        c["command"].split()[1:]
        for c in commands
        if c.get("client_type") == "lua" and c["command"].split()[0].upper() == name
    ]


async def watched(
    redis_url: str, *actions: Callable[[], Awaitable[object]]
) -> list[list[dict[str, Any]]]:
    """The commands ``MONITOR`` saw during each of ``actions``, run one after the other."""
    monitor = Monitor(redis_url)
    try:
        return [await monitor.during(action) for action in actions]
    finally:
        monitor.close()


async def load_read_script(backend: RedisBackend) -> None:
    """Run ``breaker_read.lua`` once (its first call, answered NOSCRIPT, is sent twice)."""
    await backend.read_breakers([backend.bind_breaker("warm", BreakerConfig())])


def script_calls(commands: list[dict[str, Any]]) -> list[int]:
    """The number of keys each ``EVALSHA`` a client sent carried, in order."""
    return [
        int(c["command"].split()[2])
        for c in commands
        if c.get("client_type") != "lua" and c["command"].split()[0].upper() == "EVALSHA"
    ]


async def test_the_script_asks_only_for_the_fields_and_keys_the_known_config_needs(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    writer, reader = backends
    registry = BreakerRegistry(backend=reader, clock=clock)
    for kind, config in CONFIGS.items():
        await traffic(BreakerRegistry(backend=writer, clock=clock).get(kind, config), clock)
        registry.get(kind, config)
    await load_read_script(reader)
    first, known = await watched(redis_url, registry.readings, registry.readings)

    rows = [[h.keys[3] for h in (registry.get(kind).handle for kind in CONFIGS)]]
    # first: every breaker asked for everything (its row key, its hash, two more), its config
    assert script_calls(first) == [3 + 3 + 3 * 2]
    assert lua_commands(first, "MGET") == rows
    assert [args[1:] for args in lua_commands(first, "HGET")] == [[Field.CONFIG]] * 3
    assert len(lua_commands(first, "HGETALL")) == 1, "the time window's buckets"
    # then: the row (and its hash, counted) for "none" and "count", two keys more for "time"
    # (its buckets), no config, no field of any hash
    assert script_calls(known) == [3 + 3 + 2]
    assert len(lua_commands(known, "EXISTS")) == 1
    assert lua_commands(known, "MGET") == rows
    assert len(lua_commands(known, "HGETALL")) == 1
    for command in ("HGET", "HMGET", "ZCOUNT"):
        assert not lua_commands(known, command)


async def half_open_since_the_last_read(
    writer: RedisBackend, reader: RedisBackend, clock: FakeClock
) -> tuple[BreakerRegistry, CircuitBreaker]:
    """A reader's registry of "a" and "b", read twice (both asked for their rows alone);
    then another process takes "b" OPEN, then HALF_OPEN, and holds a trial lease (returned:
    its breaker, to give the permit back)."""
    writers = BreakerRegistry(backend=writer, clock=clock)
    await succeed(writers.get("a", CONFIGS["none"]))
    trial = writers.get("b", TRIAL)
    await succeed(trial)
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("a", CONFIGS["none"])
    registry.get("b", TRIAL)
    await registry.readings()
    await registry.readings()  # both known: the rows alone
    for _ in range(2):
        await fail(trial)
    clock.advance(6)
    await trial.__aenter__()  # HALF_OPEN, one live lease
    return registry, trial


async def test_a_breaker_that_turned_half_open_since_a_read_of_its_row_alone_is_read_again(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    """The reader asked for the row alone (the breaker was CLOSED); another process took it
    OPEN, then HALF_OPEN, and holds a trial lease: the row says HALF_OPEN, so the reader
    reads that breaker again with its lease key (a second call, for it alone). The next read
    asks for its leases at once (one call); once CLOSED again, for its row alone."""
    writer, reader = backends
    registry, trial = await half_open_since_the_last_read(writer, reader, clock)
    handles = [registry.get("a").handle, registry.get("b").handle]
    seen: list[list[tuple[str, int, int]]] = []

    async def views() -> None:
        seen.append(await reader.read_views(handles))

    monitor = Monitor(redis_url)
    try:
        # the listener's views need no leases: one call, the rows alone
        assert script_calls(await monitor.during(views)) == [2 + 2]
        again = await monitor.during(registry.readings)
        [_, (_, (rec, _, _))] = await registry.readings()
        leases = await monitor.during(registry.readings)
        await trial.__aexit__(None, None, None)  # the trial succeeds
        while trial.state is not CircuitState.CLOSED:
            await succeed(trial)
        [_, (_, (closed, _, _))] = await registry.readings()
        alone = await monitor.during(registry.readings)
    finally:
        monitor.close()
    assert script_calls(again) == [2 + 2, 2 + 2], "the second call: b alone, everything asked"
    assert rec.state is CircuitState.HALF_OPEN and len(rec.trials) == 1
    assert script_calls(leases) == [2 + 2 + 2]
    assert len(lua_commands(leases, "ZCOUNT")) == 1
    assert closed.state is CircuitState.CLOSED and not closed.trials
    assert script_calls(alone) == [2 + 2]
    assert [view[0] for view in seen[0]] == ["closed", "half_open"]


async def test_a_read_whose_asks_do_not_match_its_keys_is_refused(redis_url: str) -> None:
    import redis.asyncio as redis_asyncio

    from aioresil.backends.breaker_schema import read_script

    script = read_script()
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        with pytest.raises(redis_asyncio.ResponseError, match="AIORESIL_BADREAD 2 keys for 1"):
            await client.eval(script.source, 2, "a", "b", "", "l")
        assert await client.eval(script.source, 2, "a", "b", "", "1") is not None
    finally:
        await client.aclose()


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
    expected = await read_of(writer, breaker)

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
    does) as well as the later ones: the row holds what breaker.lua last wrote."""
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


async def read_of(backend: RedisBackend, breaker: CircuitBreaker) -> dict[str, Any]:
    """``breaker``'s record as ``backend`` reads it, comparable with ``==``."""
    return record_of((await backend.read_breakers([breaker.handle]))[0][0])


async def open_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(60):
        if breaker.state is CircuitState.OPEN:
            return
        await fail(breaker)
        clock.advance(0.1)
    raise AssertionError("the breaker never opened")


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("opened", [False, True])
async def test_a_hash_without_a_row_or_with_a_damaged_one_reads_as_its_fields(
    backends: list[RedisBackend], clock: FakeClock, kind: str, opened: bool
) -> None:
    """A hash no script of this version wrote has no row: the reader packs one from its
    fields, the same record. So does a row of the wrong size."""
    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS[kind])
    await traffic(breaker, clock)
    if opened:
        await open_it(breaker, clock)
    registry = BreakerRegistry(backend=reader, clock=clock)
    other = registry.get("x", CONFIGS[kind])
    with_row = await read_of(reader, other)
    key = breaker.handle.keys[3]
    assert await writer.client.exists(key)
    await writer.client.delete(key)
    assert await read_of(reader, other) == with_row
    await writer.client.set(key, b"too short")
    assert await read_of(reader, other) == with_row
    assert with_row["state"] is (CircuitState.OPEN if opened else CircuitState.CLOSED)


@pytest.mark.parametrize(
    ("field", "value"),
    [(Field.GENERATION, "many"), (Field.FAILURES, "lots"), (Field.STATE, "exploded")],
)
async def test_an_unreadable_field_without_a_row_names_the_breaker(
    backends: list[RedisBackend], clock: FakeClock, field: str, value: str
) -> None:
    from aioresil import CorruptStateError

    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["none"])
    await traffic(breaker, clock)
    key = breaker.handle.keys[0]
    await writer.client.delete(breaker.handle.keys[3])
    await writer.client.hset(key, field, value)
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("x", CONFIGS["none"])
    with pytest.raises(CorruptStateError, match="'x'"):
        await registry.readings()
    [view] = await reader.read_views([registry.get("x").handle])
    assert view == ("open", 0, 0)  # "unknown, ask Redis": never raises for the listener


async def test_a_success_counter_that_is_no_number(
    backends: list[RedisBackend], clock: FakeClock
) -> None:
    """Written by hand: readers read the row (the hand edit reaches them when breaker.lua
    next rewrites it); the hot path leaves such a counter to the full path, which reads it
    as 0 and writes it and the row back. Without a row, the reader names the breaker."""
    from aioresil import CorruptStateError

    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["none"])
    await traffic(breaker, clock)
    await succeed(breaker)  # ends traffic's failure run: the next success may take the hot path
    key, row_key = breaker.handle.keys[0], breaker.handle.keys[3]
    await writer.client.hset(key, Field.SUCCESSES, "1 2")
    registry = BreakerRegistry(backend=reader, clock=clock)
    other = registry.get("x", CONFIGS["none"])
    assert (await read_of(reader, other))["successes"] == 4  # the row's
    await writer.client.delete(row_key)
    with pytest.raises(CorruptStateError, match="'x'"):
        await read_of(reader, other)
    await succeed(breaker)  # not hot: the counter is no count
    fields = await writer.client.hgetall(key)
    assert fields[Field.SUCCESSES.encode()] == b"1"
    assert await writer.client.get(row_key) == packed_row(fields)
    assert (await read_of(reader, other))["successes"] == 1


async def test_a_row_key_lost_alone_reads_as_the_fields_until_the_next_call_writes_it(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    """The row key evicted or deleted alone, the hash intact: a reader that asked for the
    row alone reads that breaker again, asking for everything (its row packed from the
    hash's fields), and keeps asking for everything, in one call, while the key holds no
    row; the listener's view of it is the hash's, not "unknown" (a review found a false
    "Redis lost transitions" warning). The breaker's next call writes the row whole, even a
    success on the hot path (which finds the key too short, gives the success back and takes
    the full path: a review found a breaker that only succeeds never got its row back)."""
    from aioresil.backends.breaker_schema import ROW_SIZE

    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["none"])
    await traffic(breaker, clock)
    await succeed(breaker)
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("x", CONFIGS["none"])
    registry.get("y", CONFIGS["none"])  # never called: its row key holds nothing, always
    await registry.readings()
    await registry.readings()  # x: the row alone
    row_key = breaker.handle.keys[3]
    await writer.client.delete(row_key)
    expected = await read_of(writer, breaker)
    views = await reader.read_views([registry.get("x").handle, registry.get("y").handle])
    assert views[0][:2] == ("closed", expected["generation"])
    seen: list[BreakerRecord] = []

    async def read() -> None:
        seen.append((await registry.readings())[0][1][0])

    async def hot_success() -> None:
        await succeed(breaker)

    lost, built, call, whole, alone = await watched(redis_url, read, read, hot_success, read, read)
    assert script_calls(lost) == [2 + 2 + 2, 1 + 1 + 2], "x read again, everything asked"
    assert script_calls(built) == [2 + 2 + 2 + 2], "x asked for more than its row: one call"
    assert script_calls(call) == [4], "one call: the hot path gave the success to the full path"
    assert await writer.client.strlen(row_key) == ROW_SIZE
    assert script_calls(whole) == [2 + 2 + 2 + 2]
    assert script_calls(alone) == [2 + 2 + 2], "the row alone again"
    assert record_of(seen[0]) == record_of(seen[1]) == expected
    assert seen[2].successes == seen[3].successes == expected["successes"] + 1
    assert record_of(seen[3]) == await read_of(writer, breaker)
    fields = await writer.client.hgetall(breaker.handle.keys[0])
    assert await writer.client.get(row_key) == packed_row(fields)


@pytest.mark.parametrize("rejections", [0, 3])
@pytest.mark.parametrize("failures_before", [0, 1])
async def test_every_call_leaves_the_row_equal_to_the_fields(
    backends: list[RedisBackend], clock: FakeClock, rejections: int, failures_before: int
) -> None:
    """The hot path (a CLOSED success) writes only the success counter, into the row too;
    a success that ends a failure run or carries local rejections takes the full path, which
    rewrites the row: a read sees those rejections and the run's end."""
    writer, reader = backends
    config = CONFIGS["none"]
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", config)
    await traffic(breaker, clock)
    await succeed(breaker)  # traffic ends with a failure: end that run first
    for _ in range(failures_before):
        await fail(breaker)
    keys = breaker.handle.keys
    script = breaker_script()
    state = await writer.client.hgetall(keys[0])
    generation = state[Field.GENERATION.encode()]
    before = await read_of(writer, breaker)
    reply = await writer.client.evalsha(
        script.sha, 4, *keys, "success", "", config.fingerprint, "", rejections, generation
    )
    hot = rejections == 0 and failures_before == 0
    assert (reply == 1) is hot, "only a success with nothing else to change is hot"
    fields = await writer.client.hgetall(keys[0])
    assert await writer.client.get(keys[3]) == packed_row(fields)
    registry = BreakerRegistry(backend=reader, clock=clock)
    after = await read_of(reader, registry.get("x", config))
    assert after["successes"] == before["successes"] + 1
    assert after["rejected"] == before["rejected"] + rejections
    assert after["consecutive_failures"] == 0


async def test_the_plain_lua_packer_writes_what_redis_struct_writes(redis_url: str) -> None:
    """fakeredis has no ``struct``: the scripts fall back to packing in plain Lua, which must
    write the very bytes Redis' ``struct.pack`` does, for every size of number a row holds."""
    import redis.asyncio as redis_asyncio

    numbers = [0, 1, 255, 256, 65_535, 2**31, 2**32 + 7, 1_796_521_199_337_030, 2**53 - 1]
    numbers += [-1, -255, -256, -(2**32) - 7, -(2**53) + 1]
    numbers += [2**53 + 2, 10_796_525_026_612_110, 3 * 10**18]  # an open_until can pass 2^53
    rows = [numbers[i:] + numbers[:i] for i in range(len(numbers))]
    rows = [(row * 2)[: len(ROW_NUMBERS)] for row in rows]
    source = "\n".join(
        [
            *breaker_schema._lua_row_codes(),
            "local out = {}",
            "for i, row in ipairs(cjson.decode(ARGV[1])) do",
            "  out[i] = {plain_pack_row(i, unpack(row)), pack_row(i, unpack(row))}",
            "end",
            "return out",
        ]
    )
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        answer = await client.eval(source, 0, json.dumps(rows))
    finally:
        await client.aclose()
    for i, ((plain, redis_struct), row) in enumerate(zip(answer, rows, strict=True), 1):
        expected = struct.pack("<B" + "q" * len(ROW_NUMBERS), i, *row)
        assert plain == redis_struct == expected


TRIAL = BreakerConfig(failure_threshold=2, recovery_timeout=5, trial_lease=60)


async def check_a_mixed_read(
    writer: RedisBackend, reader: RedisBackend, third: RedisBackend, clock: FakeClock
) -> None:
    """One read of four breakers, each with something of its own in the reply: a count
    window (in the row), a live trial lease (the reply's leases), a config rebound by another
    process to a time window (the reply's extras: config and buckets), and last an
    unreadable hash. Each part reaches its own breaker's record, and the error names the
    breaker whose hash is unreadable, not the first one."""
    writers = BreakerRegistry(backend=writer, clock=clock)
    counted = writers.get("a", CONFIGS["count"])
    await traffic(counted, clock)
    trial = writers.get("b", TRIAL)
    for _ in range(2):
        await fail(trial)
    assert trial.state is CircuitState.OPEN
    clock.advance(6)
    await trial.__aenter__()  # a trial permit held across the read: one live lease
    rebound = writers.get("c", CONFIGS["none"])
    await traffic(rebound, clock)
    registry = BreakerRegistry(backend=reader, clock=clock)
    for name, config in (("a", CONFIGS["count"]), ("b", TRIAL), ("c", CONFIGS["none"])):
        registry.get(name, config)
    await registry.readings()  # the reader now knows every stored config
    other = BreakerRegistry(backend=third, clock=clock).get("c", CONFIGS["time"])
    await traffic(other, clock)  # binds "time" with a window of buckets
    expected = {
        name: await read_of(backend, breaker)
        for name, backend, breaker in (
            ("a", writer, counted),
            ("b", writer, trial),
            ("c", third, other),
        )
    }
    got = {b.name: record_of(rec) for b, (rec, _, _) in await registry.readings()}
    assert got == expected
    assert len(got["b"]["trials"]) == 1 and got["b"]["state"] is CircuitState.HALF_OPEN
    assert got["c"]["config"] == CONFIGS["time"] and got["c"]["window"][1:3] == (6, 3)
    assert got["a"]["window"][1:3] == (6, 3) and not got["a"]["trials"]
    await trial.__aexit__(None, None, None)

    from aioresil import CorruptStateError

    registry.get("d", CONFIGS["none"])
    damaged = writers.get("d", CONFIGS["none"])
    await succeed(damaged)
    key = damaged.handle.keys[0]
    await writer.client.delete(damaged.handle.keys[3])
    await writer.client.hset(key, Field.GENERATION, "many")
    with pytest.raises(CorruptStateError, match="'d'"):
        await registry.readings()


async def test_one_read_gives_each_breaker_its_own_leases_config_and_error(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    writer, reader = backends
    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as third:
        await check_a_mixed_read(writer, reader, third, clock)


async def test_a_time_window_bucket_written_by_hand_names_the_breaker(
    backends: list[RedisBackend], clock: FakeClock
) -> None:
    """A bucket field breaker.lua reads (a zero-padded index) but never writes: the read
    raises CorruptStateError naming the breaker, not a bare KeyError."""
    from aioresil import CorruptStateError

    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["time"])
    await traffic(breaker, clock)
    window = breaker.handle.keys[2]
    index, value = next(iter((await writer.client.hgetall(window)).items()))
    await writer.client.hdel(window, index)
    await writer.client.hset(window, b"0" + index, value)
    registry = BreakerRegistry(backend=reader, clock=clock)
    registry.get("x", CONFIGS["time"])
    with pytest.raises(CorruptStateError, match="'x'"):
        await registry.readings()


@pytest.mark.parametrize("field", [Field.REJECTED, Field.SUCCESSES])
@pytest.mark.parametrize("value", [-3, 2**52 + 1])
async def test_a_number_breaker_lua_stored_reads_the_same_with_or_without_the_row(
    backends: list[RedisBackend], clock: FakeClock, value: int, field: str
) -> None:
    """A counter holding a number breaker.lua never writes by itself (negative, large) but
    carries on from: the row and the fields it is packed from say the same."""
    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["none"])
    await traffic(breaker, clock)
    key = breaker.handle.keys[0]
    await writer.client.hset(key, field, value)
    await fail(breaker)  # the full path: rewrites the row from the fields
    registry = BreakerRegistry(backend=reader, clock=clock)
    other = registry.get("x", CONFIGS["none"])
    with_row = await read_of(reader, other)
    assert with_row["rejected" if field == Field.REJECTED else "successes"] == value
    await writer.client.delete(breaker.handle.keys[3])
    assert await read_of(reader, other) == with_row


async def test_a_read_waits_for_a_strict_breakers_rejection_flush_in_flight(
    backends: list[RedisBackend], clock: FakeClock
) -> None:
    """An OPEN strict breaker sends its locally counted rejections from time to time; the
    flush takes them from the local tally before its script runs. A read in that moment
    must wait for it (as for a batched flush), or it would count those rejections nowhere."""
    from aioresil import CircuitOpenError

    writer, _ = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", TRIAL)
    for _ in range(2):
        await fail(breaker)
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            await succeed(breaker)
    held, release = asyncio.Event(), asyncio.Event()
    run_script = writer.run_script

    async def hold_the_flush(script: Any, keys: Any, args: Any) -> Any:
        if script.name == "breaker" and args and args[0] in ("batch", b"batch"):
            held.set()
            await release.wait()
        return await run_script(script, keys, args)

    writer.run_script = hold_the_flush  # type: ignore[method-assign]
    flush = asyncio.create_task(breaker.handle.flush(rejections=True))
    await held.wait()
    read = asyncio.create_task(writer.read_breakers([breaker.handle]))
    await asyncio.sleep(0)  # let the read start: it must now wait for the flush
    assert not read.done()
    release.set()
    [(rec, _, _)] = await read
    await flush
    assert rec.rejected == 5


async def test_a_backoff_past_the_longest_duration_is_clamped_and_reads_the_same(
    backends: list[RedisBackend], clock: FakeClock
) -> None:
    """An uncapped backoff grows the recovery timeout past what a config may give: both
    executors clamp it to MAX_DURATION_US, so open_until stays a number the row holds (it
    passes 2^53 microseconds, now included), and a read with or without the row agrees."""
    from aioresil.core.config import MAX_DURATION_US

    writer, reader = backends
    config = BreakerConfig(failure_threshold=1, recovery_timeout=1, backoff_multiplier=1e12)
    assert config.recovery_timeout_for(3) == MAX_DURATION_US / 1e6
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", config)
    await fail(breaker)
    clock.advance(2)
    await fail(breaker)  # the trial fails: the second opening, 1e12 times longer, clamped
    assert breaker.state is CircuitState.OPEN
    registry = BreakerRegistry(backend=reader, clock=clock)
    other = registry.get("x", config)
    with_row = await read_of(reader, other)
    assert with_row["reopen_count"] == 2
    assert with_row["open_until"] * 1e6 > 2**53
    assert with_row["open_until"] == pytest.approx(clock.monotonic() + MAX_DURATION_US / 1e6)
    await writer.client.delete(breaker.handle.keys[3])
    assert await read_of(reader, other) == with_row


async def test_a_read_of_more_breakers_than_one_mget_takes_reads_them_in_chunks(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    """Lua's unpack refuses about 8,000 values: the script reads the row keys MGET_CHUNK at
    a time. Every breaker's row reaches its own record across the chunks' edges."""
    from aioresil.backends.breaker_schema import MGET_CHUNK

    writer, reader = backends
    count = 2 * MGET_CHUNK + 3
    writers = BreakerRegistry(backend=writer, clock=clock)
    registry = BreakerRegistry(backend=reader, clock=clock)
    config = CONFIGS["none"]
    expected = {}
    for i in range(count):
        name = f"b{i:05d}"
        breaker = writers.get(name, config)
        expected[name] = 1 + i % 3
        for _ in range(expected[name]):
            await succeed(breaker)
        registry.get(name, config)
    await load_read_script(reader)
    await registry.readings()  # everything asked for: the rows alone from now on
    monitor = Monitor(redis_url)
    seen: list[dict[str, int]] = []

    async def read() -> None:
        seen.append({b.name: rec.successes for b, (rec, _, _) in await registry.readings()})

    try:
        commands = await monitor.during(read)
    finally:
        monitor.close()
    assert script_calls(commands) == [2 * count]
    assert len(lua_commands(commands, "MGET")) == len(lua_commands(commands, "EXISTS")) == 3
    assert seen == [expected]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
async def test_a_record_read_has_every_slot_a_new_record_has(
    backends: list[RedisBackend], kind: str
) -> None:
    """``record_from`` builds records without ``BreakerRecord.__init__`` (for speed): the
    row of a breaker no script wrote must read as ``__init__``'s record, slot by slot, and a
    slot ``__init__`` gains must be set there too (an unset one fails ``record_of``)."""
    from aioresil.backends.breaker_schema import NO_STATE
    from aioresil.core.config import FINGERPRINT_LENGTH

    _, reader = backends
    config = CONFIGS[kind]
    handle = reader.bind_breaker("fresh", config)
    empty = (NO_STATE, *(0 for _ in ROW_NUMBERS), b" " * FINGERPRINT_LENGTH)
    assert record_of(handle.record_from(empty, 0, None, None)) == record_of(BreakerRecord(config))


async def test_the_hot_path_writes_a_negative_counter_as_struct_does(
    backends: list[RedisBackend], clock: FakeClock
) -> None:
    """A success counter written negative by hand: Redis' struct packs the hot path's next
    count into the row as two's complement, the bytes the reader unpacks."""
    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["none"])
    await succeed(breaker)
    key = breaker.handle.keys[0]
    await writer.client.hset(key, Field.SUCCESSES, -5)
    await succeed(breaker)  # the hot path
    fields = await writer.client.hgetall(key)
    assert fields[Field.SUCCESSES.encode()] == b"-4"
    assert await writer.client.get(breaker.handle.keys[3]) == packed_row(fields)
    registry = BreakerRegistry(backend=reader, clock=clock)
    assert (await read_of(reader, registry.get("x", CONFIGS["none"])))["successes"] == -4


async def test_what_a_breakers_own_read_learned_reaches_the_registrys_next_read(
    backends: list[RedisBackend], clock: FakeClock, redis_url: str
) -> None:
    """The registry's asks are kept between its reads; a breaker read alone in between
    (``CircuitBreaker.stats()``) that learned it is HALF_OPEN makes the registry ask afresh:
    one call, the leases asked for at once, not a second call on every read after."""
    writer, reader = backends
    registry, trial = await half_open_since_the_last_read(writer, reader, clock)
    mine = registry.get("b")
    assert (await mine.stats()).half_open_calls == 1  # its own read: it learned
    first, again = await watched(redis_url, registry.readings, registry.readings)
    await trial.__aexit__(None, None, None)
    assert script_calls(first) == script_calls(again) == [2 + 2 + 2]


async def test_a_row_whose_hash_is_gone_reads_as_a_breaker_no_script_wrote(
    backends: list[RedisBackend], clock: FakeClock
) -> None:
    """The hash deleted (or evicted) alone, its row key not: Redis lost that state, and
    breaker.lua's next call starts the breaker afresh. Readers read it as a new breaker
    meanwhile, never the row's OPEN (a review found every read reporting it OPEN until the
    next call); the listener's view is the same. The next call rewrites the row."""
    writer, reader = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", TRIAL)
    other = BreakerRegistry(backend=writer, clock=clock).get("kept", TRIAL)
    for _ in range(2):
        await fail(breaker)
        await fail(other)
    registry = BreakerRegistry(backend=reader, clock=clock)
    mine = registry.get("x", TRIAL)
    kept = registry.get("kept", TRIAL)
    await registry.readings()
    before = await read_of(reader, mine)
    assert before["state"] is CircuitState.OPEN
    await writer.client.delete(breaker.handle.keys[0])
    fresh = record_of(BreakerRecord(TRIAL))
    for _ in range(2):  # whatever was asked: the row alone, then more
        got = {b.name: record_of(rec) for b, (rec, _, _) in await registry.readings()}
        assert got["x"] == fresh
        assert got["kept"]["state"] is CircuitState.OPEN
    views = await reader.read_views([mine.handle, kept.handle])
    assert views[0] == ("closed", 0, -1) and views[1][0] == "open"
    clock.advance(6)
    await breaker.reset()  # a call that writes: the state made again
    after = await read_of(reader, mine)
    assert after["state"] is CircuitState.CLOSED and after["generation"] > before["generation"]
    fields = await writer.client.hgetall(breaker.handle.keys[0])
    assert await writer.client.get(breaker.handle.keys[3]) == packed_row(fields)


async def test_a_reconnected_listener_reads_a_lost_row_key_from_the_hash(
    redis_url: str, clock: FakeClock
) -> None:
    """The listener's resync after a reconnect reads every view; a row key lost alone (the
    hash intact) reads from the hash, so the view stays CLOSED at its generation, and no
    "Redis lost transitions" warning is logged (a review found one, and the view reset)."""
    import structlog

    async with RedisBackend.from_url(redis_url, clock=clock, listen=False) as backend:
        registry = BreakerRegistry(backend=backend, clock=clock)
        breakers = [registry.get(name, CONFIGS["none"]) for name in "ab"]
        for breaker in breakers:
            await succeed(breaker)
        await registry.readings()
        await registry.readings()  # the rows alone
        generation = breakers[0].handle.view.generation
        await backend.client.delete(breakers[0].handle.keys[3])
        with structlog.testing.capture_logs() as logs:
            await backend._resync_views()  # what the listener does once it resubscribed
        assert not [line for line in logs if line["event"] == "circuit_view_ahead_of_redis"]
        view = breakers[0].handle.view
        assert (view.state, view.generation) == (CircuitState.CLOSED, generation)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
async def test_a_lost_hash_reads_with_no_window_whatever_was_asked(
    backends: list[RedisBackend], clock: FakeClock, kind: str
) -> None:
    """The hash of a breaker lost alone, its window key not: the buckets a time window left
    belong to the lost state, so the breaker reads as a new one, window empty, also when the
    reader asked for the buckets (a review found them read on every read)."""
    writer, reader = backends
    config = CONFIGS[kind]
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", config)
    await traffic(breaker, clock)
    registry = BreakerRegistry(backend=reader, clock=clock)
    mine = registry.get("x", config)
    await registry.readings()
    await registry.readings()  # the reader knows the config: buckets asked for a time window
    await writer.client.delete(breaker.handle.keys[0])
    for _ in range(2):
        assert await read_of(reader, mine) == record_of(BreakerRecord(config))


@pytest.mark.parametrize("hot", [True, False])
async def test_a_row_key_of_another_type_is_written_over(
    backends: list[RedisBackend], clock: FakeClock, hot: bool
) -> None:
    """A row key holding another type (written by hand): the next call writes the row over
    it, counting its outcome once, whether it would take the hot path or the full one."""
    writer, _ = backends
    breaker = BreakerRegistry(backend=writer, clock=clock).get("x", CONFIGS["none"])
    await succeed(breaker)
    keys = breaker.handle.keys
    await writer.client.delete(keys[3])
    await writer.client.rpush(keys[3], "not a row")
    await (succeed(breaker) if hot else fail(breaker))
    fields = await writer.client.hgetall(keys[0])
    assert int(fields[(Field.SUCCESSES if hot else Field.FAILURES).encode()]) == (2 if hot else 1)
    assert await writer.client.get(keys[3]) == packed_row(fields)
