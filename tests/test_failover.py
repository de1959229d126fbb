"""Failover with plain breakers (no HTTP): order, skipping, falling through, events, errors."""

from __future__ import annotations

import pytest

from aioresil import (
    Alternative,
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Failover,
    FailoverAnswered,
)
from aioresil.policies.failover import circuit_open_error_in
from aioresil.testing import FakeClock


class Down(Exception):
    pass


def breaker(name: str, clock: FakeClock, recovery: float = 10.0) -> CircuitBreaker:
    config = BreakerConfig(failure_threshold=1, recovery_timeout=recovery, success_threshold=1)
    return CircuitBreaker(name, config=config, clock=clock)


async def test_skips_an_open_breaker_without_calling_it_and_names_who_answered() -> None:
    clock = FakeClock()
    a, b = breaker("a", clock), breaker("b", clock)
    calls: list[str] = []
    down = {"a"}

    async def call(target: str, suffix: str) -> str:
        calls.append(target)
        if target in down:
            raise Down(target)
        return target + suffix

    failover = Failover([Alternative("a", "a", a), ("b", "b", b)])
    events: list[FailoverAnswered] = []
    failover.add_listener(events.append)  # type: ignore[arg-type]

    assert await failover.call(call, "!") == "b!"  # a failed, fell through
    assert await failover.call(call, "!") == "b!"  # a open: skipped, not called
    assert calls == ["a", "b", "b"]
    assert [(e.alternative, e.skipped, e.failed) for e in events] == [
        ("b", (), ("a",)),
        ("b", ("a",), ()),
    ]

    down.clear()
    clock.advance(10)
    assert await failover.call(call, "!") == "a!"  # back after recovery
    assert a.state is CircuitState.CLOSED
    stats = failover.stats()
    assert (stats.calls, stats.primary, stats.failed_over, stats.skipped, stats.failures) == (
        3,
        1,
        2,
        1,
        1,
    )


async def test_all_open_raises_the_soonest_retry_after_and_a_real_failure_wins() -> None:
    clock = FakeClock()
    a, b = breaker("a", clock, recovery=30), breaker("b", clock, recovery=5)

    async def boom(target: str) -> str:
        raise Down(target)

    failover = Failover([("a", "a", a), ("b", "b", b)], name="providers")
    with pytest.raises(Down, match="b") as caught:
        await failover.call(boom)
    assert any("earlier failure Down('a')" in note for note in caught.value.__notes__)

    with pytest.raises(CircuitOpenError) as rejected:
        await failover.call(boom)
    assert rejected.value.name == "providers"
    assert rejected.value.retry_after == pytest.approx(5)


async def test_unhandled_errors_propagate_at_once_and_cancellation_is_never_handled() -> None:
    called: list[str] = []

    async def call(target: str) -> str:
        called.append(target)
        raise KeyError(target)

    failover = Failover([("a", "a"), ("b", "b")], on=Down)
    with pytest.raises(KeyError):
        await failover.call(call)
    assert called == ["a"]
    with pytest.raises(ValueError, match="BaseException"):
        Failover([("a", "a")], on=KeyboardInterrupt)


def test_bad_alternatives_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Failover([])
    with pytest.raises(ValueError, match="unique"):
        Failover([("a", 1), ("a", 2)])
    with pytest.raises(TypeError, match="alternative 0"):
        Failover(["a"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="no call"):
        Failover([("a", 1, object())])


def test_a_wrapped_rejection_is_found_in_the_cause_chain() -> None:
    rejection = CircuitOpenError("x", CircuitState.OPEN, 1.0)
    try:
        try:
            raise rejection
        except CircuitOpenError as error:
            raise RuntimeError("sdk connection error") from error
    except RuntimeError as wrapped:
        assert circuit_open_error_in(wrapped) is rejection
    assert circuit_open_error_in(RuntimeError("x")) is None
