"""Fleet-wide Bulkhead and RateLimiter on a real redis-server (started by the fixtures).

The limits must hold across processes: four worker processes (``tests/workers/policy_worker.py``)
share one bulkhead and one token bucket. Time here is Redis ``TIME`` (the fleet's one
clock), so the lease tests wait a few tenths of a second for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aioresil import (
    BackendUnavailableError,
    BreakerConfig,
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    RateLimiter,
    RateLimitExceededError,
    Retry,
    constant,
    pipeline,
)
from aioresil.backends.redis import RedisBackend

from ..helpers import eventually, until
from ..servers import RedisServer

pytestmark = pytest.mark.redis_server

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    async with RedisBackend.from_url(redis_url) as backend:
        yield backend


def run_workers(*args: str) -> list[dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "tests" / "workers" / "policy_worker.py"), *args]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(WORKERS)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------------------- across processes


@pytest.mark.slow
async def test_fleet_bulkhead_holds_its_limit_across_four_processes(
    redis_url: str, backend: RedisBackend
) -> None:
    tasks = 10
    results = await asyncio.to_thread(
        run_workers, "bulkhead", redis_url, str(WORKERS), str(tasks), "0.02"
    )
    observed = [int(n) for n in await backend.client.lrange("test:observed", 0, -1)]
    assert len(observed) == WORKERS * tasks  # every call ran
    assert max(observed) <= 3  # never more than 3 at once across the fleet
    assert max(observed) >= 2  # and the fleet did run calls side by side
    assert sum(int(r["accepted"]) for r in results) == WORKERS * tasks
    assert all(r["rejected"] == 0 and r["active"] == 0 for r in results)
    assert await backend.client.zcard(backend.key("bulkhead", "fleet", "leases")) == 0


@pytest.mark.slow
async def test_fleet_rate_limiter_holds_its_rate_across_four_processes(
    redis_url: str,
) -> None:
    results = await asyncio.to_thread(run_workers, "ratelimit", redis_url, str(WORKERS), "1.0")
    granted = sum(int(r["granted"]) for r in results)
    window = (max(r["end_us"] for r in results) - min(r["start_us"] for r in results)) / 1e6
    # One shared bucket: burst 5 plus 20/s over the window (four private buckets would
    # allow four times that).
    assert granted <= 5 + 20 * window
    assert granted >= 20 * (window - 0.5)  # the tokens were actually handed out
    assert all(r["refused"] > 0 for r in results)


# ---------------------------------------------------------------------- leases


async def test_a_crashed_holders_lease_expires_and_its_slot_is_reclaimed(
    backend: RedisBackend,
) -> None:
    # A 1 s lease: wide enough that a stalled CI machine cannot let it lapse before the
    # refusal below is checked.
    crashed = Bulkhead(1, name="leased", backend=backend, lease=1.0)
    other = Bulkhead(1, name="leased", backend=backend, lease=1.0)
    await crashed.__aenter__()  # holds the slot and never gives it back
    with pytest.raises(BulkheadFullError) as caught:
        await other.call(asyncio.sleep, 0)
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 1.0

    async def reclaimed() -> bool:
        try:
            return await other.call(asyncio.sleep, 0, "reclaimed") == "reclaimed"
        except BulkheadFullError:
            return False  # the crashed holder's lease has not lapsed yet

    await eventually(reclaimed, what="the crashed holder's lease lapsing")
    with capture_logs() as logs:
        await crashed.__aexit__(None, None, None)  # too late: its lease is gone
    assert [line["event"] for line in logs] == ["bulkhead_lease_expired"]


async def test_a_cancelled_call_gives_its_fleet_slot_back(backend: RedisBackend) -> None:
    bulkhead = Bulkhead(1, name="cancel", backend=backend)
    started = asyncio.Event()

    async def hold() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(bulkhead.call(hold))
    await started.wait()
    assert await backend.client.zcard(backend.key("bulkhead", "cancel", "leases")) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await backend.client.zcard(backend.key("bulkhead", "cancel", "leases")) == 0
    assert bulkhead.stats().active == 0


async def test_a_fleet_waiter_gets_the_slot_when_it_frees(backend: RedisBackend) -> None:
    holder = Bulkhead(1, name="queue", backend=backend)
    waiter = Bulkhead(1, name="queue", backend=backend, max_waiting=1, poll_interval=0.01)
    release = asyncio.Event()
    holding = asyncio.create_task(holder.call(release.wait))
    # conditions, not fixed sleeps: CI machines stall
    await until(lambda: holder.stats().active == 1, within=5, what="the holder holding")
    waiting = asyncio.create_task(waiter.call(asyncio.sleep, 0, "got it"))
    await until(lambda: waiter.stats().waiting == 1, within=5, what="the waiter waiting")
    with pytest.raises(BulkheadFullError):
        await waiter.call(asyncio.sleep, 0)  # this process's one waiting place is taken
    release.set()
    await holding
    assert await waiting == "got it"


async def test_a_fleet_waiter_gives_up_after_max_wait(backend: RedisBackend) -> None:
    holder = Bulkhead(1, name="patience", backend=backend)
    waiter = Bulkhead(1, name="patience", backend=backend, max_waiting=1, max_wait=0.05)
    async with holder:
        with pytest.raises(BulkheadFullError):
            await waiter.call(asyncio.sleep, 0)
    assert waiter.stats().waiting == 0


async def test_names_are_encoded_into_one_hash_slot(backend: RedisBackend) -> None:
    bulkhead = Bulkhead(2, name="a:{b} c", backend=backend)
    async with bulkhead:
        keys = sorted(k.decode() for k in await backend.client.keys("*"))
    assert keys == ["aioresil:{bulkhead:a%3A%7Bb%7D%20c}:leases"]


# ---------------------------------------------------------------------- token bucket


async def test_fleet_rate_limiter_refuses_with_retry_after_and_shares_the_bucket(
    backend: RedisBackend,
) -> None:
    one = RateLimiter(1, per=1.0, burst=1, name="shared", backend=backend)
    two = RateLimiter(1, per=1.0, burst=1, name="shared", backend=backend)
    await one.acquire()
    with pytest.raises(RateLimitExceededError) as caught:
        await two.acquire()  # another "process": the same bucket, already empty
    assert 0.8 < caught.value.retry_after <= 1.0
    assert (one.stats().allowed, two.stats().limited) == (1, 1)


async def test_fleet_rate_limiter_waits_for_its_token_within_max_wait(
    backend: RedisBackend,
) -> None:
    limiter = RateLimiter(20, per=1.0, burst=1, max_wait=1.0, name="patient", backend=backend)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        await limiter.acquire()
    assert loop.time() - started >= 0.09  # two tokens at 20/s came 50 ms apart
    stats = limiter.stats()
    assert (stats.allowed, stats.waited, stats.limited) == (3, 2, 0)


async def test_the_bucket_key_expires_once_full(backend: RedisBackend) -> None:
    limiter = RateLimiter(100, per=1.0, burst=10, name="ttl", backend=backend)
    await limiter.acquire()
    ttl = await backend.client.pttl(backend.key("ratelimit", "ttl", "bucket"))
    assert 0 < ttl <= 1100


# ---------------------------------------------------------------------- faults


async def test_redis_down_means_no_slot_and_no_token(own_redis_server: RedisServer) -> None:
    async with RedisBackend.from_url(
        own_redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5
    ) as backend:
        bulkhead = Bulkhead(1, name="down", backend=backend)
        limiter = RateLimiter(1, name="down", backend=backend)
        own_redis_server.stop()
        ran = False

        async def work() -> None:
            nonlocal ran
            ran = True

        with pytest.raises(BackendUnavailableError):
            await bulkhead.call(work)
        with pytest.raises(BackendUnavailableError):
            await limiter.call(work)
        assert not ran


# ---------------------------------------------------------------------- with a shared breaker


async def test_retry_waits_out_a_redis_breakers_retry_after_then_the_trial_succeeds(
    backend: RedisBackend,
) -> None:
    breaker = CircuitBreaker(
        "shared-upstream",
        config=BreakerConfig(failure_threshold=1, recovery_timeout=0.2),
        backend=backend,
    )
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(seconds)

    retry = Retry(3, backoff=constant(0.01), max_retry_after=1.0, sleep=sleep)
    errors: list[BaseException] = []
    calls = 0

    async def upstream() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return "ok"

    async def recorded() -> str:
        try:
            return await breaker.call(upstream)
        except Exception as error:
            errors.append(error)
            raise

    assert await pipeline(retry).call(recorded) == "ok"
    assert isinstance(errors[0], ConnectionError)
    assert isinstance(errors[1], CircuitOpenError)  # the shared circuit opened
    assert 0.1 < delays[1] <= 0.2  # waited out the breaker's retry_after, not the backoff
    assert calls == 2  # the rejected attempt never reached the upstream
