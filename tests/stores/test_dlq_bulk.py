"""Bulk DLQ work cut short on a real Redis: whole chunks, never half an entry, and a rerun
finishes the job.

``purge`` and ``push_prepared`` are loops of chunks, each chunk one script with a deadline of
its own (see ``aioresil/stores/dlq.py``, "Bulk work"). Here a fault proxy between the backend
and ``redis-server`` cuts the loop after chunk k, the two ways a deadline meets a chunk:

* ``BLACKHOLE``: chunk k + 1 never reaches Redis (nothing of it happens);
* ``DROP_REPLIES``: chunk k + 1 runs and only its reply is lost (all of it happens).

Either way the queue is read back key by key (every index member has its entry, every entry
its indexes, the per-type counters match) and the same call run again completes the work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from aioresil import BackendState, BackendUnavailableError, DeadLetterQueue, RedisBackend
from aioresil.testing import FakeClock

from ..faultproxy import FaultProxy, Mode
from ..helpers import eventually, until
from ..servers import RedisServer

pytestmark = pytest.mark.redis_server

PURGE_CHUNK = 500  # dlq.py's _PURGE_BATCH
PUSH_CHUNK = 200  # dlq.py's _PUSH_CHUNK
TYPES = ["a", "b", "c"]
FAULTS = [Mode.BLACKHOLE, Mode.DROP_REPLIES]


@pytest.fixture
async def proxied(
    redis_server: RedisServer, redis_url: str
) -> AsyncIterator[tuple[FaultProxy, RedisBackend, aioredis.Redis]]:
    """A backend reaching the session server through a fault proxy (a short deadline, so a
    black-holed chunk fails fast), and a direct client that reads the truth."""
    direct = aioredis.Redis.from_url(redis_url)  # redis_url: the server, flushed
    with FaultProxy(redis_server.port) as proxy:
        async with RedisBackend.from_url(
            f"redis://127.0.0.1:{proxy.port}/0", listen=False, operation_timeout=0.5
        ) as backend:
            yield proxy, backend, direct
    await direct.aclose()


def rows_for(dlq: DeadLetterQueue, clock: FakeClock, n: int) -> list[Any]:
    """``n`` prepared entries of three types, 1 ms apart: index order is push order."""
    rows = []
    for i in range(n):
        rows.append(dlq.prepare(TYPES[i % 3], i, "e"))
        clock.advance(0.001)
    return rows


async def members(direct: aioredis.Redis, base: str) -> list[str]:
    return [m.decode() for m in await direct.zrange(base + "idx", 0, -1)]


async def assert_whole(direct: aioredis.Redis, base: str) -> list[str]:
    """Every key of the queue agrees with the index; returns the index members, oldest first."""
    idx = await members(direct, base)
    ids = {m[14:] for m in idx}
    keys = {k.decode() async for k in direct.scan_iter(match=base + "*", count=1000)}
    assert {k for k in keys if k.startswith(base + "e:")} == {base + "e:" + i for i in ids}
    by_type: dict[str, int] = {}
    in_type_indexes: set[str] = set()
    for key in (k for k in keys if k.startswith(base + "t:")):
        typed = [m.decode() for m in await direct.zrange(key, 0, -1)]
        in_type_indexes |= set(typed)
        for member in typed:
            task_type = (await direct.hget(base + "e:" + member[14:], "ty") or b"?").decode()
            by_type[task_type] = by_type.get(task_type, 0) + 1
    assert in_type_indexes == set(idx)
    counts = {k.decode(): int(v) for k, v in (await direct.hgetall(base + "counts")).items()}
    assert counts == by_type
    assert sum(counts.values()) == len(idx)
    return idx


async def healthy_again(proxy: FaultProxy, backend: RedisBackend) -> None:
    proxy.set_mode(Mode.PASS)
    await until(lambda: backend.state is BackendState.HEALTHY, within=30, what="probe back")


def notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


@pytest.mark.parametrize("fault", FAULTS, ids=lambda m: m.value)
async def test_a_purge_cut_after_chunk_k_leaves_whole_entries_and_a_rerun_finishes(
    proxied: tuple[FaultProxy, RedisBackend, aioredis.Redis], fault: Mode
) -> None:
    proxy, backend, direct = proxied
    clock = FakeClock()
    dlq = DeadLetterQueue(backend, name="purged", clock=clock)
    base = backend.key("dlq", "purged", "")
    n, k = 4 * PURGE_CHUNK + 123, 2
    assert await dlq.push_prepared(rows_for(dlq, clock, n)) == n
    before = await assert_whole(direct, base)

    def cut_after_chunk_k(removed: int) -> None:
        if removed == k * PURGE_CHUNK:
            proxy.set_mode(fault)

    with pytest.raises(BackendUnavailableError) as cut:
        await dlq.purge(progress=cut_after_chunk_k)
    assert f"purge removed {k * PURGE_CHUNK} entries" in notes(cut.value)
    assert "run the same purge again" in notes(cut.value)

    # The chunk in flight happened entirely (its reply was lost) or not at all (never sent).
    gone = (k + 1 if fault is Mode.DROP_REPLIES else k) * PURGE_CHUNK

    async def settled() -> bool:
        return len(await members(direct, base)) == n - gone

    await eventually(settled, within=30, what=f"{n - gone} entries left")
    assert await assert_whole(direct, base) == before[gone:]  # the oldest went first

    await healthy_again(proxy, backend)
    assert await dlq.purge() == n - gone
    assert await assert_whole(direct, base) == []
    assert await direct.keys(base + "*") == []  # nothing left behind, not even a counter


@pytest.mark.parametrize("fault", FAULTS, ids=lambda m: m.value)
async def test_a_push_prepared_cut_after_chunk_k_leaves_whole_chunks_and_says_which(
    proxied: tuple[FaultProxy, RedisBackend, aioredis.Redis], fault: Mode
) -> None:
    proxy, backend, direct = proxied
    clock = FakeClock()
    dlq = DeadLetterQueue(backend, name="loaded", clock=clock)
    base = backend.key("dlq", "loaded", "")
    n, k = 4 * PUSH_CHUNK + 57, 2
    rows = rows_for(dlq, clock, n)
    chunks: list[Sequence[Any]] = []
    run_script: Callable[..., Awaitable[Any]] = backend.run_script

    async def counting(script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if script.name == "dlq_push_many":
            chunks.append(keys)
            if len(chunks) == k + 1:
                proxy.set_mode(fault)
        return await run_script(script, keys, args)

    backend.run_script = counting  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailableError) as cut:
        await dlq.push_prepared(rows, batch=100_000)  # cut to chunks of 200 all the same
    backend.run_script = run_script  # type: ignore[method-assign]
    assert [(len(keys) - 7) // 2 for keys in chunks] == [PUSH_CHUNK] * (k + 1)
    in_flight = chunks[k][7].decode() if isinstance(chunks[k][7], bytes) else chunks[k][7]
    in_flight_id = in_flight.removeprefix(base + "e:")
    said = notes(cut.value)
    assert f"push_prepared stored {k * PUSH_CHUNK} entries before this chunk of 200" in said
    assert f"dlq.get({in_flight_id!r}) tells which" in said

    stored = (k + 1 if fault is Mode.DROP_REPLIES else k) * PUSH_CHUNK

    async def settled() -> bool:
        return len(await members(direct, base)) == stored

    await eventually(settled, within=30, what=f"{stored} entries stored")
    idx = await assert_whole(direct, base)
    assert [int(m[:13]) for m in idx] == sorted(int(m[:13]) for m in idx)

    await healthy_again(proxy, backend)
    landed = await dlq.get(in_flight_id)
    assert (landed is not None) == (fault is Mode.DROP_REPLIES)  # the note's test holds
    assert await dlq.push_prepared(rows[stored:]) == n - stored
    idx = await assert_whole(direct, base)
    assert len(idx) == n
    page = await dlq.list(limit=1000)
    assert sorted(e.payload for e in page.entries) == list(range(n))  # each once, none lost
