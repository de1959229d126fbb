"""Redis Sentinel, for real: a master, a replica and three sentinels on loopback, and a
``SENTINEL FAILOVER`` in the middle of the load.

What must hold across the failover (with ``wait_replicas=1``):

* 1,000 DLQ pushes end as exactly 1,000 distinct entries on the new master (pushes the old
  master took but never replicated are spooled and pushed again, idempotently by id);
* a breaker forced open before is still open after; a breaker taking calls throughout decides
  every call (ran or rejected, never a backend error);
* a checkpoint keeps its latest acknowledged version (a save whose outcome was unknown is
  retried as its own write);
* the ``redis+sentinel://`` URL works from code and from the CLI, and its options mean what
  they mean on ``redis://``: a task waits for a pooled connection up to ``pool_timeout``, then
  gets ``PoolTimeoutError`` (the sentinel path used to drop ``pool_timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aioresil import (
    BreakerConfig,
    CheckpointOutcomeUnknownError,
    CheckpointStore,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    DeadLetterQueue,
    PoolTimeoutError,
    RedisBackend,
)
from aioresil.cli.common import connect

from ..helpers import eventually, until
from ..sentinel import SERVICE, SentinelDeployment

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.redis_server


@pytest.fixture(scope="module")
def deployment() -> Iterator[SentinelDeployment]:
    sentinels = SentinelDeployment().start()
    try:
        yield sentinels
    finally:
        sentinels.cleanup()


@pytest.fixture(params=["redis", "redis+sentinel"])
def either_url(request: pytest.FixtureRequest, deployment: SentinelDeployment) -> str:
    """The deployment's master by a plain URL, then by its Sentinel URL: each test below must
    see the same behaviour from both."""
    if request.param == "redis+sentinel":
        return deployment.url
    return f"redis://127.0.0.1:{deployment.master_port()}/0"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIORESIL_REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "aioresil", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )


async def test_the_sentinel_url_reaches_the_master_from_code_and_cli(
    deployment: SentinelDeployment,
) -> None:
    master = deployment.master_port()
    async with RedisBackend.from_url(deployment.url, listen=False) as backend:
        store = CheckpointStore(backend, namespace="url")
        assert await store.save("job", {"n": 1}) >= 1
        assert backend.client.connection_pool.master_address == ("127.0.0.1", master)
        breaker = CircuitBreaker("cli-visible", backend=backend)
        await breaker.force_open()
    listed = cli("--redis", deployment.url, "breakers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "cli-visible" in listed.stdout

    bad = cli("--redis", "redis+sentinel://127.0.0.1:notaport/mymaster", "breakers")
    assert bad.returncode == 2
    assert "port of sentinel '127.0.0.1' is 'notaport'" in bad.stderr
    assert "Traceback" not in bad.stderr


async def test_pool_timeout_bounds_the_wait_for_a_connection_on_both_url_forms(
    either_url: str,
) -> None:
    # max_connections=3 leaves one connection for operations (two are kept for pub/sub): an
    # operation holding it makes the next one wait for a connection, for pool_timeout only.
    async with RedisBackend.from_url(
        either_url, listen=False, max_connections=3, pool_timeout=0.2, operation_timeout=30
    ) as backend:
        await backend.ping()
        entered, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            entered.set()
            await release.wait()

        holder = asyncio.create_task(backend.execute("hold", hold))
        await entered.wait()
        try:
            async with asyncio.timeout(10):  # a ceiling for a slow machine: 0.2 s expected
                with pytest.raises(PoolTimeoutError, match=r"within 0\.2s"):
                    await backend.ping()
        finally:
            release.set()
            await holder


async def test_a_task_waits_for_a_pooled_connection_on_both_url_forms(either_url: str) -> None:
    # The pool itself is exhausted (its only connection taken outside the backend): the next
    # operation waits for it, as a blocking pool does, instead of failing at once.
    async with RedisBackend.from_url(
        either_url, listen=False, max_connections=1, pool_timeout=30
    ) as backend:
        await backend.ping()
        pool = backend.client.connection_pool
        held = await pool.get_connection()
        asked = asyncio.Event()
        take = pool.get_connection

        async def spy() -> object:
            asked.set()
            return await take()

        pool.get_connection = spy  # type: ignore[method-assign]
        waiting = asyncio.create_task(backend.ping())
        await asked.wait()
        await pool.release(held)
        await waiting  # served by the released connection, not failed at once
        assert backend.state.value == "healthy"


async def test_the_cli_waits_for_a_connection_the_same_way_on_both_url_forms(
    either_url: str,
) -> None:
    # `--redis` goes through from_url with the CLI's pool size and the default pool_timeout.
    backend = await connect(argparse.Namespace(redis=either_url, prefix="aioresil"))
    try:
        pool = backend.client.connection_pool
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        assert (pool.max_connections, pool.timeout) == (8, 5.0)
    finally:
        await backend.aclose()


async def test_dlq_breakers_and_checkpoints_survive_a_sentinel_failover(
    deployment: SentinelDeployment,
) -> None:
    backend = RedisBackend.from_sentinel(
        deployment.addresses,
        SERVICE,
        wait_replicas=1,
        wait_timeout=0.3,
        operation_timeout=1.0,
        socket_timeout=1.0,
        socket_connect_timeout=0.5,
    )
    dlq = DeadLetterQueue(backend, name="failover")
    store = CheckpointStore(backend, namespace="failover")
    forced = CircuitBreaker("forced", backend=backend)
    live = CircuitBreaker("live", config=BreakerConfig(failure_threshold=1000), backend=backend)
    old = deployment.master_port()
    new = next(n.port for n in deployment.nodes if n.port != old)

    # Breakers never WAIT: this test waits until the replica holds the forced state, which is
    # what a forced state needs to survive (see the README's "What survives what").
    await forced.force_open()
    replica = aioredis.Redis(port=new)
    state_key = backend.key("cb", "forced", "state")

    async def replicated() -> bool:
        return bool(await replica.hget(state_key, "st") == b"forced_open")

    await eventually(replicated, within=30, what="the forced state on the replica")
    assert await replica.hget(state_key, "st") == b"forced_open"

    stop = asyncio.Event()
    decided = {"ran": 0, "rejected": 0, "during": 0}
    errors: list[BaseException] = []
    failing_over = False
    acknowledged: list[tuple[int, int]] = []  # (version, n) of saves that returned

    async def caller() -> None:
        while not stop.is_set():
            try:
                async with live:
                    decided["ran"] += 1
            except CircuitOpenError:
                decided["rejected"] += 1
            except Exception as exc:
                errors.append(exc)
            if failing_over:
                decided["during"] += 1
            await asyncio.sleep(0.005)  # the pace of the background traffic, not a wait

    async def saver() -> None:
        version, n = 0, 0
        while not stop.is_set():
            n += 1
            while True:  # the same save until its outcome is known
                try:
                    version = await store.save("ck", {"n": n}, expected_version=version)
                    break
                except CheckpointOutcomeUnknownError:
                    await asyncio.sleep(0.02)  # a caller's back-off before the same save
            acknowledged.append((version, n))
            await asyncio.sleep(0.01)  # the pace of the background saves, not a wait

    pushed: list[str] = []

    async def push(count: int, start: int) -> None:
        async def worker(k: int) -> None:
            for i in range(start + k, start + count, 20):
                pushed.append(await dlq.push("job", {"i": i}, "boom"))

        await asyncio.gather(*(worker(k) for k in range(20)))

    background = [asyncio.create_task(caller()), asyncio.create_task(saver())]
    try:
        await push(300, 0)
        await asyncio.to_thread(deployment.request_failover)
        failing_over = True
        switched = asyncio.create_task(asyncio.to_thread(deployment.wait_failover_done, old))
        # A steady stream for as long as the sentinels switch masters (up to 600 pushes): the
        # writes the old master takes after the replica's promotion are the ones a failover
        # drops. A burst sent before the switch completes never meets that window.
        n = 300
        while not switched.done() and n < 900:
            pushed.append(await dlq.push("job", {"i": n}, "boom"))
            n += 1
            await asyncio.sleep(0.002)
        await switched
        failing_over = False
        await push(1000 - n, n)
        await until(lambda: dlq.spooled == 0, within=60, what="every spooled push replayed")
        # Settle the checkpoint: one more acknowledged save after the failover.
        settled = len(acknowledged)
        await until(lambda: len(acknowledged) > settled, within=30, what="a save after it")
    finally:
        stop.set()
        await asyncio.gather(*background)

    try:
        assert backend.client.connection_pool.master_address == ("127.0.0.1", new)
        truth = aioredis.Redis(port=new)
        members = await truth.zrange(backend.key("dlq", "failover", "idx"), 0, -1)
        stored = [m.decode().split("|")[1] for m in members]
        assert len(pushed) == 1000
        assert len(set(pushed)) == 1000
        assert sorted(stored) == sorted(pushed)  # exactly the 1,000, none twice
        assert await dlq.count() == 1000

        assert errors == []
        assert decided["ran"] > 0 and decided["during"] > 0
        assert forced.state is CircuitState.FORCED_OPEN
        async with RedisBackend.from_url(f"redis://127.0.0.1:{new}/0", listen=False) as fresh:
            again = CircuitBreaker("forced", backend=fresh)
            assert (await again.stats()).state is CircuitState.FORCED_OPEN

        checkpoint = await store.load("ck")
        last_version, last_n = acknowledged[-1]
        assert checkpoint is not None
        assert (checkpoint.version, checkpoint.state) == (last_version, {"n": last_n})
        await truth.aclose()
    finally:
        await replica.aclose()
        await backend.aclose()
