"""Rejections while OPEN reach Redis within seconds, so the fleet's view counts them.

A process whose circuit is open answers every call from its local view (no round trip) and
counts the rejection locally; before, those counts reached Redis only with the next script
call, so ``aioresil serve`` showed 0 rejected while one replica had rejected thousands.
"""

from __future__ import annotations

import pytest

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, RedisBackend
from aioresil.backends.redis_breaker import REJECTION_FLUSH_INTERVAL

from ..helpers import eventually

pytestmark = pytest.mark.redis_server


async def test_local_rejections_reach_the_shared_counters_while_open(redis_url: str) -> None:
    config = BreakerConfig(failure_threshold=1, recovery_timeout=600)
    async with (
        RedisBackend.from_url(redis_url) as replica,
        RedisBackend.from_url(redis_url, listen=False) as observer,
    ):
        breaker = CircuitBreaker("payments", config=config, backend=replica)
        with pytest.raises(RuntimeError):
            async with breaker:
                raise RuntimeError("down")
        for _ in range(25):
            with pytest.raises(CircuitOpenError):
                async with breaker:
                    pass
        watcher = CircuitBreaker("payments", config=config, backend=observer)
        seen = 0

        async def all_counted() -> bool:
            nonlocal seen
            seen = (await watcher.stats()).rejected_calls
            return seen >= 25

        # waits on the condition; the bound only stops a hang
        await eventually(
            all_counted,
            within=10 * REJECTION_FLUSH_INTERVAL + 10,
            interval=0.05,
            what="the 25 rejections reaching the fleet view",
        )
        assert seen == 25
