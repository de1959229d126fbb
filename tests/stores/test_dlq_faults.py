"""The dead letter queue under faults, on real Redis servers and real processes.

* a worker SIGKILLed inside its handler loses nothing: the entry is back once the lease ends;
* two worker processes retrying one queue settle every entry exactly once;
* pushes made while Redis is down wait in the local spool (and its file) and are flushed when
  it is back;
* with ``spool_path``, pushes spooled by a process that is then SIGKILLed are replayed, once
  each, by a new queue on the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from aioresil import (
    BackendState,
    BackendUnavailableError,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterSpoolDropped,
    DeadLetterSpooled,
    DeadLetterUnavailableError,
    RedisBackend,
)
from aioresil.stores.dlq_redis import _push_args, dlq_script

from ..helpers import until
from ..servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]

KILLED_WORKER = """
import asyncio, sys
from aioresil import DeadLetterQueue, RedisBackend

async def main(url: str, entry_id: str) -> None:
    async with RedisBackend.from_url(url) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")

        async def handler(letter):
            print(letter.idempotency_key, flush=True)
            await asyncio.sleep(3600)   # killed here, mid-retry

        await dlq.retry(entry_id, handler, lease=30)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

RETRY_WORKER = """
import asyncio, sys
from aioresil import DeadLetterQueue, RedisBackend

async def main(url: str) -> None:
    async with RedisBackend.from_url(url) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")

        async def handler(letter):
            await backend.client.rpush("handled", letter.id)
            await asyncio.sleep(0.001)

        report = await dlq.retry_all(handler, concurrency=8)
        print(report.succeeded, report.skipped, flush=True)

asyncio.run(main(sys.argv[1]))
"""


class LaterClock:
    """The real clock moved ``ahead`` seconds into the future (to be "after the lease")."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead

    def time(self) -> float:
        return time.time() + self.ahead


async def spawn(code: str, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT
    )


@pytest.mark.slow
async def test_a_worker_killed_inside_its_handler_loses_nothing(redis_url: str) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        entry_id = await dlq.push("charge", {"order": 7}, "card declined", attempts=2)
        worker = await spawn(KILLED_WORKER, redis_url, entry_id)
        assert worker.stdout is not None
        key = (await asyncio.wait_for(worker.stdout.readline(), 30)).decode().strip()
        os.kill(worker.pid, signal.SIGKILL)
        assert await worker.wait() == -signal.SIGKILL
        assert key == f"{entry_id}:2"

        # The entry never left the queue; its lease (decided by Redis TIME) still holds it.
        assert await dlq.count() == 1
        assert (await dlq.stats())["in_flight"] == 1
        with pytest.raises(DeadLetterUnavailableError, match="leased"):
            await dlq.claim(entry_id)

        # Seen from after the 30 s lease, the entry is free again, with the same key.
        later = DeadLetterQueue(backend, name="jobs", clock=LaterClock(31))
        received: list[DeadLetter] = []

        async def handler(letter: DeadLetter) -> None:
            received.append(letter)

        assert await later.retry(entry_id, handler) is True
        assert [(r.payload, r.idempotency_key) for r in received] == [({"order": 7}, key)]
        assert await dlq.count() == 0


@pytest.mark.slow
async def test_two_worker_processes_settle_every_entry_exactly_once(redis_url: str) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        ids = {await dlq.push("t", i, "e") for i in range(300)}
        workers = [await spawn(RETRY_WORKER, redis_url) for _ in range(2)]
        outputs = [await asyncio.wait_for(w.communicate(), 60) for w in workers]
        assert [w.returncode for w in workers] == [0, 0]
        succeeded = [int(out.split()[0]) for out, _ in outputs]
        assert sum(succeeded) == 300
        handled = [v.decode() for v in await backend.client.lrange("handled", 0, -1)]
        assert sorted(handled) == sorted(ids)  # each entry's handler ran once, in one process
        assert await dlq.count() == 0


async def fast_backend(server: RedisServer) -> RedisBackend:
    return RedisBackend.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=0.5)


async def test_pushes_during_an_outage_are_spooled_then_flushed_when_redis_is_back(
    own_redis_server: RedisServer,
) -> None:
    async with await fast_backend(own_redis_server) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        events: list[Any] = []
        dlq.add_listener(events.append)
        await dlq.push("t", "before", "e")
        own_redis_server.stop()

        during = [await dlq.push("t", f"during {i}", "e") for i in range(3)]
        assert dlq.spooled == 3
        assert [e.entry_id for e in events if isinstance(e, DeadLetterSpooled)] == during
        with pytest.raises(BackendUnavailableError):
            await dlq.flush_spool()
        assert dlq.spooled == 3  # a failed flush keeps everything

        own_redis_server.start()  # no persistence: the server comes back empty
        # the backend's probe finds Redis again and its recovery hook flushes the spool,
        # without waiting for another push
        await until(lambda: dlq.spooled == 0, what="spool flushed on recovery")
        assert backend.health.state is BackendState.HEALTHY
        stats = await dlq.stats()
        assert (stats["spooled"], stats["total_failed_tasks"]) == (0, 3)
        after = await dlq.push("t", "after", "e")
        assert dlq.spooled == 0
        page = await dlq.list()
        assert sorted(e.id for e in page.entries) == sorted([*during, after])
        assert {e.payload for e in page.entries} == {"during 0", "during 1", "during 2", "after"}


async def test_the_spool_file_is_read_back_by_a_queue_built_after_the_first_is_gone(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "dlq-spool.jsonl"
    own_redis_server.stop()
    first_backend = await fast_backend(own_redis_server)
    first = DeadLetterQueue(first_backend, name="jobs", spool_path=path, close_timeout=0.5)
    ids = [await first.push("t", {"n": i, "ü": "{x}"}, ValueError("down")) for i in range(2)]
    assert len(path.read_text().splitlines()) == 2
    await first_backend.aclose()  # Redis still down: kept in the file, logged, no exception
    del first, first_backend  # nothing of the first queue is left but its file

    own_redis_server.start()  # no persistence: only the file can bring the entries back
    async with await fast_backend(own_redis_server) as backend:
        second = DeadLetterQueue(backend, name="jobs", spool_path=path)
        assert second.spooled == 2
        assert await second.flush_spool() == 2
        assert path.read_text() == ""
        letters = [await second.get(i) for i in ids]
        assert [(x.payload, x.error_type) for x in letters if x] == [
            ({"n": 0, "ü": "{x}"}, "ValueError"),
            ({"n": 1, "ü": "{x}"}, "ValueError"),
        ]
        assert await second.count() == 2
        assert await second.flush_spool() == 0


SPOOL_KILL_WORKER = ROOT / "tests" / "workers" / "spool_kill_worker.py"


@pytest.mark.slow
async def test_spooled_pushes_survive_a_sigkill_of_the_pushing_process(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.spool"
    count = 25
    own_redis_server.stop()  # Redis down: every push of the worker is spooled
    with (tmp_path / "worker.err").open("wb") as err:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SPOOL_KILL_WORKER),
            own_redis_server.url,
            str(path),
            str(count),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
        )
    assert worker.stdout is not None
    lines: list[str] = []
    try:
        while not lines or lines[-1] not in ("ready", ""):
            lines.append((await asyncio.wait_for(worker.stdout.readline(), 60)).decode().strip())
    finally:
        if worker.returncode is None:
            os.kill(worker.pid, signal.SIGKILL)  # no aclose, no flush: the process just ends
    assert await worker.wait() == -signal.SIGKILL, (tmp_path / "worker.err").read_text()
    assert lines[-1] == "ready", lines
    ids = lines[:-1]
    assert len(ids) == count and len(set(ids)) == count

    own_redis_server.start()  # no persistence: only the spool file can bring the entries back
    async with await fast_backend(own_redis_server) as backend:
        assert await backend.client.dbsize() == 0
        dlq = DeadLetterQueue(backend, name="jobs", spool_path=path)
        assert dlq.spooled == count
        assert await dlq.flush_spool() == count
        assert path.read_text() == ""
        # Exactly the acknowledged ids, once each, in the queue's index in Redis itself.
        members = await backend.client.zrange(backend.key("dlq", "jobs", "idx"), 0, -1)
        assert sorted(m.decode().split("|")[1] for m in members) == sorted(ids)
        assert await dlq.count() == count
        letters = [await dlq.get(i) for i in ids]
        assert [(x.payload, x.error_type) for x in letters if x] == [
            ({"n": n}, "ConnectionError") for n in range(count)
        ]
        # A third process finds nothing more to replay: no entry comes back twice.
        again = DeadLetterQueue(backend, name="jobs", spool_path=path)
        assert (again.spooled, await again.flush_spool(), await dlq.count()) == (0, 0, count)


async def test_replaying_a_spooled_push_that_already_landed_stores_it_once(
    own_redis_server: RedisServer,
) -> None:
    async with await fast_backend(own_redis_server) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        own_redis_server.stop()
        entry_id = await dlq.push("t", 1, "e")
        own_redis_server.start()
        # That push reached Redis and only its reply was lost: store it as the push would have,
        # synchronously, before the event loop lets the backend's probe flush the spool.
        spooled_id, spooled_fields = dlq._spool.first()
        assert spooled_id == entry_id
        storage = dlq._storage
        script = dlq_script("dlq_push")
        args = _push_args(entry_id, spooled_fields, 10, "reject", "")
        direct = redis.Redis(port=own_redis_server.port)
        try:
            keys = [
                *storage.queue_keys,
                storage.entry_key(entry_id),
                storage.type_key(spooled_fields["tk"]),
            ]
            reply = direct.eval(script.source, len(keys), *keys, *args)
        finally:
            direct.close()
        assert reply[0] == 1
        await until(lambda: dlq.spooled == 0, what="spool flushed on recovery")
        assert await dlq.count() == 1  # already there: not stored twice


async def test_a_spool_file_that_blocks_never_stalls_the_event_loop(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    """Issue 12: the spool wrote its file on the event loop, so a slow disk stalled every task
    of the process. Here the "disk" is a FIFO nobody reads yet (opening it for writing blocks,
    as a hung NFS mount does): the push waits in a worker thread while the loop keeps running,
    and returns once its line is written."""
    path = tmp_path / "dlq-spool.fifo"
    async with await fast_backend(own_redis_server) as backend:
        dlq = DeadLetterQueue(backend, name="jobs", spool_path=path)
        os.mkfifo(path)  # after construction: a queue reads an existing spool file when built
        own_redis_server.stop()
        loop_ran = threading.Event()
        lines: list[str] = []

        def disk() -> None:
            # Reads (which unblocks the writer) once the event loop showed it kept running; the
            # bound only turns a stalled loop into a failure instead of a hang.
            loop_ran.wait(timeout=30)
            with path.open(encoding="utf-8") as fifo:
                lines.extend(fifo)

        reader = threading.Thread(target=disk, daemon=True)
        reader.start()
        push = asyncio.create_task(dlq.push("t", {"n": 1}, "down"))
        # The entry is in the spool before its line is written: the loop sees that only if the
        # write waits off the loop.
        await until(lambda: dlq.spooled == 1 or push.done(), within=60, what="entry spooled")
        written_while_loop_ran = not push.done()
        loop_ran.set()
        entry_id = await push
        await asyncio.to_thread(reader.join)
        assert written_while_loop_ran, "the push blocked the event loop while writing its file"
        assert [json.loads(line)["id"] for line in lines] == [entry_id]
        path.unlink()  # emptying the spool file after the flush must not block on the FIFO
        own_redis_server.start()
        await until(lambda: dlq.spooled == 0, what="spool flushed on recovery")
        assert [e.id for e in (await dlq.list()).entries] == [entry_id]


async def test_a_full_spool_refuses_loudly(own_redis_server: RedisServer) -> None:
    backend = await fast_backend(own_redis_server)
    dlq = DeadLetterQueue(backend, name="jobs", spool_max=1, close_timeout=0.5)
    own_redis_server.stop()
    await dlq.push("t", 1, "e")
    with pytest.raises(BackendUnavailableError, match="spool is full"):
        await dlq.push("t", 2, "e")
    assert dlq.spooled == 1
    # Redis still down at close and no spool file: the backend's close says so, loudly.
    with pytest.raises(BackendUnavailableError, match="1 spooled entry is held only in"):
        await backend.aclose()


async def test_a_close_that_fails_while_the_block_fails_keeps_the_blocks_own_error(
    own_redis_server: RedisServer,
) -> None:
    """``async with backend:`` around code that raises, Redis down, an entry spooled in memory:
    the user's exception reaches them (carrying the close error as a note), not ours."""
    backend = await fast_backend(own_redis_server)
    dlq = DeadLetterQueue(backend, name="jobs", close_timeout=0.5)
    own_redis_server.stop()
    mine = ValueError("the caller's own error")

    async def failing_block() -> None:
        async with backend:
            await dlq.push("t", 1, "e")
            raise mine

    with pytest.raises(ValueError) as raised:
        await failing_block()
    assert raised.value is mine
    assert any("1 spooled entry is held only in" in note for note in raised.value.__notes__)
    assert dlq.spooled == 1  # still counted: nothing pretends it was sent


async def test_a_spooled_entry_the_queue_rejects_when_flushed_is_dropped_loudly(
    own_redis_server: RedisServer,
) -> None:
    async with await fast_backend(own_redis_server) as backend:
        dlq = DeadLetterQueue(backend, name="jobs", max_entries=1)
        events: list[Any] = []
        dlq.add_listener(events.append)
        own_redis_server.stop()
        ids = [await dlq.push("t", i, "e") for i in range(2)]
        own_redis_server.start()
        await until(lambda: dlq.spooled == 0, what="spool flushed on recovery")
        assert [e.entry_id for e in events if isinstance(e, DeadLetterSpoolDropped)] == [ids[1]]
        assert dlq.spooled == 0
        assert await dlq.count() == 1


async def test_the_dlq_shares_one_hash_tag_slot(redis_url: str) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        dlq = DeadLetterQueue(backend, name="a:{b}")
        entry_id = await dlq.push("type:{x}", 1, "e")
        await dlq.claim(entry_id)
        client: aioredis.Redis = backend.client
        keys = [k.decode() for k in await client.keys("*")]
        assert len(keys) >= 6
        assert {k.split("}")[0] + "}" for k in keys} == {"aioresil:{dlq:a%3A%7Bb%7D}"}
