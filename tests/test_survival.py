"""What survives a Redis crash: the rows of the README's "What survives what" table that are
about one server (the failover rows are ``tests/test_sentinel_failover.py``).

* ``appendonly yes`` + ``appendfsync always``: every acknowledged DLQ push, checkpoint save
  and breaker transition is back after the server is SIGKILLed and restarted;
* no persistence (the default of these tests' servers): nothing is back, and aioresil starts
  over cleanly (breakers CLOSED, empty queue, no checkpoint) rather than failing.
"""

from __future__ import annotations

import os
import signal

import pytest

from aioresil import (
    CheckpointStore,
    CircuitBreaker,
    CircuitState,
    DeadLetterQueue,
    RedisBackend,
)

from .servers import RedisServer, free_port

pytestmark = pytest.mark.redis_server


def crash(server: RedisServer) -> None:
    """SIGKILL: no shutdown save, no goodbye; then start again on the same port and dir."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    server.start()


async def write_everything(url: str) -> list[str]:
    async with RedisBackend.from_url(url, listen=False) as backend:
        dlq = DeadLetterQueue(backend, name="jobs")
        ids = [await dlq.push("t", {"i": i}, "boom") for i in range(20)]
        store = CheckpointStore(backend, namespace="ns")
        version = 0
        for n in range(3):
            version = await store.save("job", {"n": n}, expected_version=version)
        await CircuitBreaker("payments", backend=backend).force_open()
    return ids


async def test_acknowledged_writes_survive_a_redis_crash_with_aof_always() -> None:
    server = RedisServer(free_port(), ["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:
        ids = await write_everything(server.url)
        crash(server)
        async with RedisBackend.from_url(server.url, listen=False) as backend:
            dlq = DeadLetterQueue(backend, name="jobs")
            page = await dlq.list(limit=100)
            assert sorted(e.id for e in page.entries) == sorted(ids)
            checkpoint = await CheckpointStore(backend, namespace="ns").load("job")
            assert checkpoint is not None and (checkpoint.version, checkpoint.state) == (
                3,
                {"n": 2},
            )
            stats = await CircuitBreaker("payments", backend=backend).stats()
            assert stats.state is CircuitState.FORCED_OPEN
    finally:
        server.cleanup()


async def test_without_persistence_a_crash_starts_everything_over_cleanly(
    own_redis_server: RedisServer,
) -> None:
    await write_everything(own_redis_server.url)
    crash(own_redis_server)
    async with RedisBackend.from_url(own_redis_server.url, listen=False) as backend:
        assert await DeadLetterQueue(backend, name="jobs").count() == 0
        assert await CheckpointStore(backend, namespace="ns").load("job") is None
        breaker = CircuitBreaker("payments", backend=backend)
        assert (await breaker.stats()).state is CircuitState.CLOSED
        async with breaker:  # and it decides calls again
            pass
