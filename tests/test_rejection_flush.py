"""Rejections while OPEN reach Redis within seconds, so the fleet's view counts them.

A process whose circuit is open answers every call from its local view (no round trip) and
counts the rejection locally; before, those counts reached Redis only with the next script
call, so ``aioresil serve`` showed 0 rejected while one replica had rejected thousands.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, RedisBackend
from aioresil.backends.redis_breaker import REJECTION_FLUSH_INTERVAL

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
        deadline = time.monotonic() + 10 * REJECTION_FLUSH_INTERVAL + 10
        seen = (await watcher.stats()).rejected_calls
        while seen < 25:  # waits on the condition; the bound only stops a hang
            assert time.monotonic() < deadline, f"the fleet view still shows {seen} rejected"
            await asyncio.sleep(0.05)
            seen = (await watcher.stats()).rejected_calls
        assert seen == 25
