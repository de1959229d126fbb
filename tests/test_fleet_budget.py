"""The fleet-wide retry budget: 8 processes, a full outage, amplification measured.

Without a budget every original call reaches the upstream ``attempts`` times; with one, the
whole fleet's retries are bounded by ``min_retries`` per window plus ``ratio`` of successes
(none here), so the amplification stays near 1 whatever the number of processes.
"""

from __future__ import annotations

from typing import Any

import pytest

from aioresil import FleetRetryBudget, MemoryBackend, Retry, constant
from aioresil.testing import FakeClock

from .fleet_jobs import run_all


class Down(Exception):
    pass


async def test_memory_budget_allows_ratio_of_successes_plus_floor() -> None:
    clock = FakeClock()
    budget = FleetRetryBudget(
        "b", backend=MemoryBackend(), ratio=0.5, min_retries=2, window=10, clock=clock
    )
    for _ in range(10):
        budget.deposit()
    granted = [await budget.try_withdraw() for _ in range(10)]
    assert granted.count(True) == 7  # 0.5 * 10 successes + 2
    stats = await budget.stats()
    assert (stats.successes, stats.retries, stats.refused) == (10, 7, 3)
    clock.advance(10)  # the window slid past every bucket
    assert [await budget.try_withdraw() for _ in range(3)] == [True, True, False]


async def test_retry_gives_up_with_reason_budget_when_the_fleet_budget_is_spent() -> None:
    budget = FleetRetryBudget("b", backend=MemoryBackend(), ratio=0.0, min_retries=1)
    retry = Retry(5, on=Down, backoff=constant(0), budget=budget)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise Down()

    for _ in range(3):
        with pytest.raises(Down):
            await retry.call(down)
    assert calls == 3 + 1  # one retry in the whole window
    assert retry.stats().budget_exhausted == 3


async def test_successes_refill_the_budget_through_retry() -> None:
    budget = FleetRetryBudget("b", backend=MemoryBackend(), ratio=1.0, min_retries=0)
    retry = Retry(2, on=Down, backoff=constant(0), budget=budget)

    async def ok() -> int:
        return 1

    async def down() -> None:
        raise Down()

    with pytest.raises(Down):
        await retry.call(down)
    assert retry.stats().retries == 0
    await retry.call(ok)
    async for attempt in retry:
        async with attempt:
            pass  # a success through the attempt iterator deposits too
    assert (await budget.stats()).successes == 2
    with pytest.raises(Down):
        await retry.call(down)
    assert retry.stats().retries == 1


def test_bad_budget_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="ratio"):
        FleetRetryBudget("b", backend=MemoryBackend(), ratio=-1)
    with pytest.raises(ValueError, match="window"):
        FleetRetryBudget("b", backend=MemoryBackend(), window=0)
    with pytest.raises(TypeError, match="backend"):
        FleetRetryBudget("b", backend=None)


def _specs(url: str, *, budget: bool, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "job": "budget",
            "url": url,
            "name": f"upstream-{tag}",
            "budget": budget,
            "ratio": 0.1,
            "window": 30.0,
            "min_retries": 10,
            "attempts": 4,
            "calls": 40,
            "workers": 8,
            "barrier": f"test:barrier:{tag}",
            "upstream": f"test:upstream:{tag}",
        }
        for _ in range(8)
    ]


@pytest.mark.redis_server
async def test_eight_processes_under_a_full_outage_stay_within_the_budget(
    redis_url: str,
) -> None:
    """Without the budget each call would reach the upstream 4 times (``Retry(4)``; the
    benchmark measures both); with it the fleet retries about ``min_retries`` times in all."""
    import redis.asyncio as aioredis

    answers = await run_all(_specs(redis_url, budget=True, tag="on"))
    client = aioredis.Redis.from_url(redis_url)
    try:
        reached = int(await client.get("test:upstream:on"))
    finally:
        await client.aclose()
    originals = 8 * 40
    retries = sum(a["retries"] for a in answers)
    print(f"\namplification with the budget {reached / originals:.3f} (4.0 without)")
    assert reached == originals + retries
    # No success in the window: the fleet may retry min_retries times per window (30 s), and
    # the run lasts at most two windows.
    assert 1 <= retries <= 2 * 10
    assert reached / originals <= 1 + 20 / originals
    # Every call gave up, each for the budget unless its retries ran out first.
    exhausted = sum(a["budget_exhausted"] for a in answers)
    assert originals - retries <= exhausted <= originals


async def test_without_a_budget_every_call_is_tried_attempts_times() -> None:
    retry = Retry(4, on=Down, backoff=constant(0))
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise Down()

    for _ in range(10):
        with pytest.raises(Down):
            await retry.call(down)
    assert calls == 40
