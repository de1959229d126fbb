"""Redis loses a breaker's state without a failover (``DEL``, ``FLUSHDB``, an allkeys-*
eviction): the state made again must be newer than what every process saw, or each process's
view (which never goes back to an older generation) ignores Redis for good and its failures
never trip the circuit again. Real redis-server, Redis ``TIME`` (no test clock).
"""

from __future__ import annotations

import pytest

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState, RedisBackend
from aioresil.backends.breaker_schema import Field

from ..helpers import Boom, eventually, fail, rejected, succeed

pytestmark = pytest.mark.redis_server

CONFIG = BreakerConfig(failure_threshold=2, recovery_timeout=60)


async def outcome(breaker: CircuitBreaker) -> str:
    try:
        async with breaker:
            raise Boom("upstream down")
    except Boom:
        return "failed"
    except CircuitOpenError:
        return "rejected"


@pytest.mark.parametrize("loss", ["del", "flushdb"])
async def test_a_state_redis_lost_is_made_again_newer_and_trips_for_every_process(
    redis_url: str, loss: str
) -> None:
    async with (
        RedisBackend.from_url(redis_url, prefix=f"lost-{loss}") as ours,
        RedisBackend.from_url(redis_url, prefix=f"lost-{loss}") as theirs,
    ):
        breaker = CircuitBreaker("pay", config=CONFIG, backend=ours)
        other = CircuitBreaker("pay", config=CONFIG, backend=theirs)
        await succeed(other)  # the other process knows the breaker (and listens)
        # Move the generation on: trip, then an operator reset (two transitions).
        await fail(breaker)
        await fail(breaker)
        assert breaker.state is CircuitState.OPEN
        await breaker.reset()
        assert breaker.state is CircuitState.CLOSED
        key = ours.key("cb", "pay", "state")
        before = int(await ours.client.hget(key, "g"))

        if loss == "del":
            await ours.client.delete(key)
        else:
            await ours.client.flushdb()

        outcomes = [await outcome(breaker) for _ in range(4)]
        # The first failure finds no state: it is made again (that failure's generation is
        # gone, so it is not counted); the next two trip it; the fourth is rejected.
        assert outcomes == ["failed", "failed", "failed", "rejected"], outcomes
        assert int(await ours.client.hget(key, "g")) > before
        assert (await ours.client.hget(key, "st")) == b"open"

        async def other_sees_it_open() -> bool:
            return other.state is CircuitState.OPEN

        await eventually(other_sees_it_open, what="the other process's view opening")
        await rejected(other)


@pytest.mark.parametrize("damage", ["missing", "unreadable"])
async def test_a_state_reset_for_an_unreadable_generation_is_newer_and_trips(
    redis_url: str, damage: str
) -> None:
    """The corrupt-state reset must land above every view too: a generation field lost or
    garbled restarted the state at 1, which no process's view followed (failures never
    tripped it)."""
    async with RedisBackend.from_url(redis_url, prefix=f"corrupt-{damage}") as ours:
        breaker = CircuitBreaker("pay", config=CONFIG, backend=ours)
        await succeed(breaker)
        key = ours.key("cb", "pay", "state")
        before = int(await ours.client.hget(key, Field.GENERATION))
        if damage == "missing":
            await ours.client.hdel(key, Field.GENERATION)
        else:
            await ours.client.hset(key, Field.GENERATION, "not a number")

        outcomes = [await outcome(breaker) for _ in range(4)]
        # The first failure finds the state unreadable: reset (its permit's generation is
        # gone, so it is not counted); the next two trip it; the fourth is rejected.
        assert outcomes == ["failed", "failed", "failed", "rejected"], outcomes
        assert int(await ours.client.hget(key, Field.GENERATION)) > before
        assert (await ours.client.hget(key, Field.STATE)) == b"open"
