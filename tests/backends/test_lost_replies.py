"""Lost replies and shutdowns: the write ran on Redis, the reply never came back.

A real ``redis-server`` behind the fault proxy (``tests/faultproxy.py``) in "drop replies"
mode: the command reaches Redis and runs, the reply is swallowed. What must hold:

* a checkpoint save: ``CheckpointOutcomeUnknownError``, and the same save sent again is
  recognized as the store's own write (no conflict, one version); ``cp.step`` never runs its
  function twice; a real stale writer still gets ``CheckpointConflictError``;
* a DLQ push: the entry waits in the spool, the replay finds it stored: one entry, not two;
* shutdown: spooled entries reach Redis at ``aclose()`` when it is back, or the spool file
  when it is not, and a new process replays that file.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aioresil import (
    BackendUnavailableError,
    CheckpointConflictError,
    CheckpointOutcomeUnknownError,
    CheckpointStore,
    CircuitBreaker,
    CircuitState,
    DeadLetterQueue,
    RedisBackend,
)
from aioresil.backends.backend_health import BackendState

from ..faultproxy import FaultProxy, Mode
from ..helpers import until
from ..servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def proxy(own_redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(own_redis_server.port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def proxied(proxy: FaultProxy) -> AsyncIterator[RedisBackend]:
    """A backend that reaches Redis only through the proxy, with short deadlines."""
    backend = RedisBackend.from_url(
        f"redis://127.0.0.1:{proxy.port}/0",
        operation_timeout=0.5,
        socket_timeout=0.4,
        socket_connect_timeout=0.4,
        listen=False,
    )
    try:
        yield backend
    finally:
        proxy.set_mode(Mode.PASS)
        await backend.aclose()


@pytest.fixture
async def direct(own_redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client straight to the server: what Redis really holds."""
    client = aioredis.Redis(port=own_redis_server.port)
    try:
        yield client
    finally:
        await client.aclose()


async def healed(proxy: FaultProxy, backend: RedisBackend) -> None:
    """Let replies through again and wait until the backend's probe has seen Redis."""
    proxy.set_mode(Mode.PASS)
    await until(lambda: backend.state is BackendState.HEALTHY, what="backend healthy again")


@pytest.mark.parametrize("blob", ["", "x" * 20_000], ids=["inline", "staged"])
async def test_a_checkpoint_save_whose_reply_is_lost_is_retried_as_its_own_write(
    proxy: FaultProxy, proxied: RedisBackend, direct: aioredis.Redis, blob: str
) -> None:
    store = CheckpointStore(proxied, namespace="jobs")
    assert await store.save("job", {"n": 1, "blob": blob}, expected_version=0) == 1
    proxy.set_mode(Mode.DROP_REPLIES)
    with pytest.raises(CheckpointOutcomeUnknownError) as caught:
        await store.save("job", {"n": 2, "blob": blob}, expected_version=1)
    assert caught.value.expected_version == 1
    assert isinstance(caught.value, BackendUnavailableError)  # old handlers still catch it
    key = proxied.key("ckpt", "jobs", "d:job")
    assert await direct.hget(key, "v") == b"2"  # it ran on Redis; only the reply was lost

    await healed(proxy, proxied)
    # The same save again: recognized by its write id, no conflict, no second version.
    assert await store.save("job", {"n": 2, "blob": blob}, expected_version=1) == 2
    loaded = await store.load("job")
    assert loaded is not None and (loaded.version, loaded.state) == (2, {"n": 2, "blob": blob})
    assert not [k async for k in direct.scan_iter(match="*stage*")]  # no staged leftovers

    # A real stale writer (another store, no write id of its own in Redis) still conflicts.
    stale = CheckpointStore(proxied, namespace="jobs")
    with pytest.raises(CheckpointConflictError, match="expected version 1, stored version is 2"):
        await stale.save("job", {"n": 99}, expected_version=1)


async def test_a_lost_reply_that_never_ran_is_stored_by_the_retry(
    proxy: FaultProxy, proxied: RedisBackend, direct: aioredis.Redis
) -> None:
    store = CheckpointStore(proxied, namespace="jobs")
    assert await store.save("job", "v1", expected_version=0) == 1
    proxy.set_mode(Mode.BLACKHOLE)  # nothing reaches Redis this time
    with pytest.raises(CheckpointOutcomeUnknownError):
        await store.save("job", "v2", expected_version=1)
    assert await direct.hget(proxied.key("ckpt", "jobs", "d:job"), "v") == b"1"
    await healed(proxy, proxied)
    assert await store.save("job", "v2", expected_version=1) == 2


async def test_cp_step_never_runs_its_function_twice_because_a_reply_was_lost(
    proxy: FaultProxy, proxied: RedisBackend, direct: aioredis.Redis
) -> None:
    store = CheckpointStore(proxied, namespace="steps")
    calls: list[int] = []

    async def fetch() -> dict[str, int]:
        calls.append(1)
        return {"rows": 42}

    async with store.resume("task", initial={"next": 0}) as cp:
        assert await cp.save({"next": 0}) == 1  # the save script is loaded on the server
        proxy.set_mode(Mode.DROP_REPLIES)
        with pytest.raises(CheckpointOutcomeUnknownError):
            await cp.step("fetch", fetch)
        assert await direct.hget(proxied.key("ckpt", "steps", "d:task"), "v") == b"2"  # landed
        await healed(proxy, proxied)
        assert await cp.step("fetch", fetch) == {"rows": 42}
        assert calls == [1]
        assert await cp.save({"next": 1}) == cp.version  # the handle's fence is intact
    async with store.resume("task") as again:
        assert again.state == {"next": 1}
        assert await again.step("fetch", fetch) == {"rows": 42}
    assert calls == [1]


async def test_a_different_state_saved_after_an_unknown_outcome_is_fenced_on_either_outcome(
    proxy: FaultProxy, proxied: RedisBackend, direct: aioredis.Redis
) -> None:
    store = CheckpointStore(proxied, namespace="jobs")
    async with store.resume("job", initial=0) as cp:
        await cp.save(1)
        proxy.set_mode(Mode.DROP_REPLIES)
        with pytest.raises(CheckpointOutcomeUnknownError):
            await cp.save(2)
        assert await direct.hget(proxied.key("ckpt", "jobs", "d:job"), "v") == b"2"  # landed
        await healed(proxy, proxied)
        assert await cp.save(3) == 3  # on top of its own unknown write: no conflict
    loaded = await store.load("job")
    assert loaded is not None and (loaded.version, loaded.state) == (3, 3)


async def test_a_dlq_push_whose_reply_is_lost_is_stored_once(
    proxy: FaultProxy, proxied: RedisBackend, direct: aioredis.Redis
) -> None:
    dlq = DeadLetterQueue(proxied, name="jobs")
    first = await dlq.push("email", {"to": "x@y.z"}, "smtp down")  # loads the script
    proxy.set_mode(Mode.DROP_REPLIES)
    entry_id = await dlq.push("email", {"to": "a@b.c"}, "smtp down")
    assert dlq.spooled == 1
    base = proxied.key("dlq", "jobs", "")
    assert await direct.exists(base + "e:" + entry_id) == 1  # it ran; the reply was lost
    await healed(proxy, proxied)
    await until(lambda: dlq.spooled == 0, what="the spool replayed on recovery")
    assert await dlq.count() == 2
    letter = await dlq.get(entry_id)
    assert letter is not None and letter.payload == {"to": "a@b.c"}
    members = await direct.zrange(base + "idx", 0, -1)
    assert sorted(m.decode().split("|")[1] for m in members) == sorted([first, entry_id])


# ---------------------------------------------------------------------------- shutdown


async def test_entries_spooled_in_an_outage_reach_redis_at_close_when_it_is_back(
    own_redis_server: RedisServer, direct: aioredis.Redis
) -> None:
    backend = RedisBackend.from_url(
        own_redis_server.url, operation_timeout=0.5, socket_connect_timeout=0.3, listen=False
    )
    dlq = DeadLetterQueue(backend, name="jobs")
    own_redis_server.stop()
    ids = [await dlq.push("t", i, "down") for i in range(3)]
    assert dlq.spooled == 3
    own_redis_server.start()  # no push, no flush: only the close is left to save them
    await backend.aclose()
    members = await direct.zrange(backend.key("dlq", "jobs", "idx"), 0, -1)
    assert sorted(m.decode().split("|")[1] for m in members) == sorted(ids)


RESTARTED = """
import asyncio, sys
from aioresil import DeadLetterQueue, RedisBackend

async def main(url: str, path: str) -> None:
    async with RedisBackend.from_url(url) as backend:
        dlq = DeadLetterQueue(backend, name="jobs", spool_path=path)
        print(dlq.spooled, await dlq.flush_spool(), dlq.spooled, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_entries_still_spooled_at_close_go_to_the_spool_file_and_a_new_process_replays(
    own_redis_server: RedisServer, direct: aioredis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.spool"
    backend = RedisBackend.from_url(
        own_redis_server.url, operation_timeout=0.5, socket_connect_timeout=0.3, listen=False
    )
    dlq = DeadLetterQueue(backend, name="jobs", spool_path=path, close_timeout=1.0)
    own_redis_server.stop()
    ids = [await dlq.push("t", {"n": i}, "down") for i in range(3)]
    await backend.aclose()  # Redis still down: kept in the file, logged, no exception
    assert len(path.read_text().splitlines()) == 3

    own_redis_server.start()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", RESTARTED, own_redis_server.url, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "3", "0"]
    members = await direct.zrange(backend.key("dlq", "jobs", "idx"), 0, -1)
    assert sorted(m.decode().split("|")[1] for m in members) == sorted(ids)
    assert path.read_text() == ""


async def test_entries_held_only_in_memory_at_close_raise_with_their_count(
    own_redis_server: RedisServer,
) -> None:
    backend = RedisBackend.from_url(
        own_redis_server.url, operation_timeout=0.5, socket_connect_timeout=0.3, listen=False
    )
    dlq = DeadLetterQueue(backend, name="jobs", close_timeout=1.0)
    own_redis_server.stop()
    for i in range(2):
        await dlq.push("t", i, "down")
    with pytest.raises(BackendUnavailableError, match="2 spooled entries are held only in"):
        async with dlq:  # the queue's own close says it too
            pass
    with pytest.raises(BackendUnavailableError, match="2 spooled entries are held only in"):
        await backend.aclose()
    assert dlq.spooled == 2  # still there for a caller that wants to retry


# ---------------------------------------------------------------------------- breakers


async def test_a_reconnected_listener_adopts_what_redis_holds_even_an_older_generation(
    redis_url: str,
) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        breaker = CircuitBreaker("lost-in-failover", backend=backend)
        await breaker.force_open()
        assert breaker.state is CircuitState.FORCED_OPEN
        direct = aioredis.Redis.from_url(redis_url)
        try:
            await until(lambda: backend._listener is not None, what="listener started")
            # What a failover that lost the transition leaves: the new master never saw it
            # (nor the read row the same script wrote).
            parts = ("state", "row")
            await direct.delete(*(backend.key("cb", "lost-in-failover", p) for p in parts))
            await direct.client_kill_filter(_type="pubsub")  # the listener reconnects
            await until(lambda: breaker.state is CircuitState.CLOSED, what="view resynced")
        finally:
            await direct.aclose()
