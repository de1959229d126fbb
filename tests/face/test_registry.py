"""BreakerRegistry: create-or-return, names, stats of all, reset of all."""

from __future__ import annotations

from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, CircuitState, StateChanged
from aioresil.testing import EventRecorder, FakeClock

from ..helpers import fail, rejected, succeed


@pytest.fixture
def registry(backend: Any, clock: FakeClock) -> BreakerRegistry:
    return BreakerRegistry(
        backend=backend, default_config=BreakerConfig(failure_threshold=2), clock=clock
    )


def test_registry_starts_empty(registry: BreakerRegistry) -> None:
    assert registry.names() == []
    assert len(registry) == 0


def test_get_creates_a_breaker_with_the_default_config(registry: BreakerRegistry) -> None:
    breaker = registry.get("openai")
    assert breaker.name == "openai"
    assert breaker.config.failure_threshold == 2
    assert "openai" in registry


def test_get_returns_the_existing_breaker(registry: BreakerRegistry) -> None:
    first = registry.get("openai")
    assert registry.get("openai") is first
    assert registry.get("openai", first.config) is first
    assert registry.names() == ["openai"]


def test_get_with_a_conflicting_config_is_an_error(registry: BreakerRegistry) -> None:
    registry.get("openai")
    with pytest.raises(ValueError, match="different config"):
        registry.get("openai", BreakerConfig(failure_threshold=9))


def test_get_with_its_own_config(registry: BreakerRegistry) -> None:
    breaker = registry.get("slow", BreakerConfig(failure_threshold=7))
    assert breaker.config.failure_threshold == 7


async def test_stats_of_all_breakers(registry: BreakerRegistry) -> None:
    a, b = registry.get("a"), registry.get("b")
    await fail(a)
    await fail(a)
    await succeed(b)
    stats = await registry.stats()
    assert set(stats) == {"a", "b"}
    assert stats["a"].state is CircuitState.OPEN
    assert stats["b"].state is CircuitState.CLOSED
    assert stats["b"].success_count == 1


async def test_reset_all(registry: BreakerRegistry) -> None:
    a, b = registry.get("a"), registry.get("b")
    for breaker in (a, b):
        await fail(breaker)
        await fail(breaker)
        await rejected(breaker)
    await registry.reset_all()
    for breaker in (a, b):
        stats = await breaker.stats()
        assert stats.state is CircuitState.CLOSED
        assert stats.failure_count == 0
        await succeed(breaker)


async def test_registry_listener_sees_present_and_future_breakers(
    registry: BreakerRegistry,
) -> None:
    events = EventRecorder()
    early = registry.get("early")
    registry.add_listener(events)
    late = registry.get("late")
    for breaker in (early, late):
        await fail(breaker)
        await fail(breaker)
    assert sorted(e.name for e in events.of_type(StateChanged)) == ["early", "late"]


def test_default_config_must_be_a_breaker_config() -> None:
    with pytest.raises(TypeError, match="default_config"):
        BreakerRegistry(default_config={"failure_threshold": 1})  # type: ignore[arg-type]


def test_iteration_yields_breakers(registry: BreakerRegistry) -> None:
    made = [registry.get(n) for n in ("x", "y", "z")]
    assert list(registry) == made
