"""The health app's fixtures (``test_health_app.py``, ``test_metrics.py``): a backend that is
memory or a real redis-server (not the suite's three kinds: no fakeredis, no pub/sub
listener), a registry and a queue on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, DeadLetterQueue, MemoryBackend
from aioresil.testing import FakeClock


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    from aioresil import RedisBackend

    url = request.getfixturevalue("redis_url")
    async with RedisBackend.from_url(url, clock=clock, listen=False) as redis_backend:
        yield redis_backend


@pytest.fixture
def registry(backend: Any, clock: FakeClock) -> BreakerRegistry:
    config = BreakerConfig(failure_threshold=2, recovery_timeout=30)
    return BreakerRegistry(backend=backend, default_config=config, clock=clock)


@pytest.fixture
def dlq(backend: Any, clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(backend, name="jobs", clock=clock)
