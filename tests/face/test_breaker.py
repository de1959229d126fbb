"""The circuit breaker's behaviour, on every backend (see ``backend_kind`` in conftest).

Covers the seed report's breaker list (defaults, custom config, each transition, stats, reset,
force open, lifecycle, independent breakers) and what the seed never tested: concurrency,
cancellation, ignored exceptions, stale outcomes and trial leases.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
import structlog

from aioresil import (
    AioresilError,
    BreakerConfig,
    CallRejected,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    StateChanged,
    Trigger,
)
from aioresil.testing import EventRecorder, FakeClock

from ..conftest import MakeBreaker
from ..helpers import Boom, fail, rejected, succeed

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


async def test_new_breaker_is_closed_and_allows_calls(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    assert (await breaker.stats()).state is CLOSED
    await succeed(breaker)
    assert breaker.state is CLOSED  # the local view, after a call
    stats = await breaker.stats()
    assert stats.state is CLOSED
    assert (stats.success_count, stats.failure_count, stats.total_calls) == (1, 0, 1)


async def test_default_config_is_used_when_none_given(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    assert breaker.config == BreakerConfig()
    assert breaker.config.failure_threshold == 5


async def test_failures_below_threshold_keep_circuit_closed(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=3)
    for _ in range(2):
        await fail(breaker)
    stats = await breaker.stats()
    assert stats.state is CLOSED
    assert stats.failure_count == 2
    assert stats.consecutive_failures == 2


async def test_reaching_threshold_opens_circuit(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=3, recovery_timeout=10)
    for _ in range(3):
        await fail(breaker)
    stats = await breaker.stats()
    assert stats.state is OPEN
    assert stats.opened_at is not None
    assert stats.retry_after == pytest.approx(10)


async def test_success_resets_the_consecutive_failure_run(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=3)
    for _ in range(5):
        await fail(breaker)
        await fail(breaker)
        await succeed(breaker)
    stats = await breaker.stats()
    assert stats.state is CLOSED
    assert stats.failure_count == 10
    assert stats.consecutive_failures == 0


async def test_open_circuit_rejects_without_running_the_block(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=30)
    await fail(breaker)
    error = await rejected(breaker)
    assert isinstance(error, AioresilError)
    assert error.name == "b"
    assert error.state is OPEN
    assert error.retry_after == pytest.approx(30)
    assert (await breaker.stats()).rejected_calls == 1


async def test_retry_after_counts_down_with_the_clock(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=30)
    await fail(breaker)
    clock.advance(12)
    error = await rejected(breaker)
    assert error.retry_after == pytest.approx(18)


async def test_open_moves_to_half_open_after_recovery_timeout(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=5)
    await fail(breaker)
    clock.advance(4.9)
    await rejected(breaker)
    clock.advance(0.1)
    await succeed(breaker)  # the trial call runs
    assert (await breaker.stats()).state is HALF_OPEN


async def test_half_open_closes_after_success_threshold(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=5, success_threshold=3)
    await fail(breaker)
    clock.advance(5)
    for expected in (HALF_OPEN, HALF_OPEN, CLOSED):
        await succeed(breaker)
        assert (await breaker.stats()).state is expected


async def test_trial_failure_reopens_circuit(make_breaker: MakeBreaker, clock: FakeClock) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=5)
    await fail(breaker)
    clock.advance(5)
    await succeed(breaker)
    await fail(breaker)
    stats = await breaker.stats()
    assert stats.state is OPEN
    assert stats.retry_after == pytest.approx(5)
    await rejected(breaker)


async def test_recovery_timeout_grows_with_backoff_and_is_capped(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(
        failure_threshold=1, recovery_timeout=2, backoff_multiplier=3, max_recovery_timeout=10
    )
    await fail(breaker)
    expected = [2, 6, 10, 10]
    for timeout in expected:
        stats = await breaker.stats()
        assert stats.retry_after == pytest.approx(timeout)
        clock.advance(timeout)
        await fail(breaker)  # the trial fails: re-open with a longer timeout
    clock.advance(10)
    await succeed(breaker)
    await succeed(breaker)
    assert (await breaker.stats()).state is CLOSED
    await fail(breaker)
    assert (await breaker.stats()).retry_after == pytest.approx(2), "closing resets the backoff"


async def test_full_lifecycle_closed_open_half_open_closed(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=2, recovery_timeout=1, success_threshold=2)
    events = EventRecorder()
    breaker.add_listener(events)
    await fail(breaker)
    await fail(breaker)
    await rejected(breaker)
    clock.advance(1)
    await succeed(breaker)
    await succeed(breaker)
    await succeed(breaker)
    moves = [(e.old, e.new, e.trigger) for e in events.of_type(StateChanged)]
    assert moves == [
        (CLOSED, OPEN, Trigger.TRIP),
        (OPEN, HALF_OPEN, Trigger.TIMEOUT_ELAPSED),
        (HALF_OPEN, CLOSED, Trigger.TRIALS_PASSED),
    ]
    rejections = events.of_type(CallRejected)
    assert len(rejections) == 1
    assert rejections[0].state is OPEN


async def test_breakers_with_different_names_are_independent(make_breaker: MakeBreaker) -> None:
    a = make_breaker("provider-a", failure_threshold=1)
    b = make_breaker("provider-b", failure_threshold=1)
    await fail(a)
    assert (await a.stats()).state is OPEN
    assert (await b.stats()).state is CLOSED
    await succeed(b)


async def test_same_name_on_one_backend_shares_state(backend: Any, clock: FakeClock) -> None:
    config = BreakerConfig(failure_threshold=2)
    one = CircuitBreaker("shared", config=config, backend=backend, clock=clock)
    two = CircuitBreaker("shared", config=config, backend=backend, clock=clock)
    await fail(one)
    await fail(two)
    assert (await one.stats()).state is OPEN
    await rejected(two)


async def test_stats_to_dict_is_json_ready(make_breaker: MakeBreaker) -> None:
    import json

    breaker = make_breaker(failure_threshold=1)
    await succeed(breaker)
    await fail(breaker)
    data = (await breaker.stats()).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["state"] == "open"
    assert data["name"] == "b"
    for key in (
        "failure_count",
        "success_count",
        "total_calls",
        "rejected_calls",
        "opened_at",
        "retry_after",
    ):
        assert key in data
    assert isinstance(data["opened_at"], str)
    assert data["opened_at"].endswith("+00:00")


async def test_reset_closes_and_clears_counters(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1)
    await fail(breaker)
    await rejected(breaker)
    await breaker.reset()
    stats = await breaker.stats()
    assert stats.state is CLOSED
    assert (stats.failure_count, stats.success_count, stats.rejected_calls) == (0, 0, 0)
    assert stats.opened_at is None
    await succeed(breaker)


async def test_force_open_rejects_until_reset(make_breaker: MakeBreaker, clock: FakeClock) -> None:
    breaker = make_breaker(recovery_timeout=1)
    await breaker.force_open()
    error = await rejected(breaker)
    assert error.state is CircuitState.FORCED_OPEN
    assert error.retry_after is None
    clock.advance(3600)
    await rejected(breaker)
    await breaker.reset()
    await succeed(breaker)


async def test_disabled_lets_everything_through_and_still_counts(
    make_breaker: MakeBreaker,
) -> None:
    breaker = make_breaker(failure_threshold=1)
    await breaker.disable()
    for _ in range(5):
        await fail(breaker)
    await succeed(breaker)
    stats = await breaker.stats()
    assert stats.state is CircuitState.DISABLED
    assert (stats.failure_count, stats.success_count) == (5, 1)


async def test_user_exception_propagates_unchanged(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker()
    error = KeyError("mine")
    with pytest.raises(KeyError) as info:
        async with breaker:
            raise error
    assert info.value is error
    assert info.value.__cause__ is None


async def test_ignored_exception_counts_as_neither(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=2, ignore_exceptions=(LookupError,))
    await fail(breaker)
    for _ in range(5):
        await fail(breaker, KeyError("not found is not an outage"))
    stats = await breaker.stats()
    assert stats.state is CLOSED
    assert (stats.failure_count, stats.success_count, stats.ignored_count) == (1, 0, 5)
    assert stats.consecutive_failures == 1, "an ignored error neither extends nor breaks a run"


async def test_unrecorded_exception_counts_as_success(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=2, record_exceptions=(Boom,))
    await fail(breaker)
    await fail(breaker, ValueError("bad input, upstream is fine"))
    await fail(breaker)
    stats = await breaker.stats()
    assert stats.state is CLOSED
    assert (stats.failure_count, stats.success_count) == (2, 1)


async def test_cancellation_is_not_a_failure(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1)
    started = asyncio.Event()

    async def hang() -> None:
        async with breaker:
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hang())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = await breaker.stats()
    assert stats.state is CLOSED
    assert (stats.failure_count, stats.total_calls) == (0, 0)


async def test_cancelled_trial_gives_its_permit_back(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=1, half_open_max_calls=1)
    await fail(breaker)
    clock.advance(1)
    started = asyncio.Event()

    async def hang() -> None:
        async with breaker:
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hang())
    await started.wait()
    await rejected(breaker)  # the only permit is taken
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await succeed(breaker)  # the permit came back
    assert (await breaker.stats()).state is HALF_OPEN


async def test_half_open_limit_holds_under_100_concurrent_tasks(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(
        failure_threshold=1, recovery_timeout=1, half_open_max_calls=3, success_threshold=50
    )
    await fail(breaker)
    clock.advance(1)
    running = peak = decided = 0
    gate, all_decided = asyncio.Event(), asyncio.Event()

    def one_decided() -> None:
        nonlocal decided
        decided += 1
        if decided == 100:
            all_decided.set()

    async def trial() -> str:
        nonlocal running, peak
        try:
            async with breaker:
                one_decided()
                running += 1
                peak = max(peak, running)
                await gate.wait()
                running -= 1
                return "ran"
        except CircuitOpenError as error:
            one_decided()
            assert error.state is HALF_OPEN
            return "rejected"

    tasks = [asyncio.create_task(trial()) for _ in range(100)]
    async with asyncio.timeout(10):
        await all_decided.wait()  # every task has its answer while the permit holders run
    gate.set()
    results = await asyncio.gather(*tasks)
    assert peak == 3
    assert results.count("ran") == 3
    assert results.count("rejected") == 97


async def test_trial_lease_expires_so_an_abandoned_permit_is_given_back(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=1, trial_lease=10)
    await fail(breaker)
    clock.advance(1)
    await breaker.__aenter__()  # a holder that never reports back (crashed, abandoned)
    await rejected(breaker)
    clock.advance(10)
    await succeed(breaker)  # its slot came back after the lease
    await succeed(breaker)
    assert (await breaker.stats()).state is CLOSED


async def test_late_failure_from_before_opening_does_not_reopen_half_open(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=1)
    slow_started, release = asyncio.Event(), asyncio.Event()

    async def slow_call() -> None:
        async with breaker:
            slow_started.set()
            await release.wait()
            raise Boom("late")

    task = asyncio.create_task(slow_call())
    await slow_started.wait()
    await fail(breaker)  # opens the circuit while the slow call is in flight
    clock.advance(1)
    await succeed(breaker)  # trial 1 of 2 succeeds: HALF_OPEN
    release.set()
    with pytest.raises(Boom):
        await task
    stats = await breaker.stats()
    assert stats.state is HALF_OPEN, "an outcome from the CLOSED era must not judge the trial"
    assert stats.failure_count == 2  # but it is counted


async def test_late_success_from_before_opening_is_not_a_trial(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    breaker = make_breaker(failure_threshold=1, recovery_timeout=1, success_threshold=1)
    slow_started, release = asyncio.Event(), asyncio.Event()

    async def slow_call() -> None:
        async with breaker:
            slow_started.set()
            await release.wait()

    task = asyncio.create_task(slow_call())
    await slow_started.wait()
    await fail(breaker)
    clock.advance(1)
    trial_entered = await breaker.__aenter__()  # a trial is running
    release.set()
    await task
    assert (await breaker.stats()).state is HALF_OPEN
    await trial_entered.__aexit__(None, None, None)
    assert (await breaker.stats()).state is CLOSED


async def test_decorator_and_call_share_the_guard(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=2)
    calls: list[int] = []

    @breaker
    async def fetch(x: int, *, scale: int = 1) -> int:
        """Fetch something."""
        calls.append(x)
        if x < 0:
            raise Boom("negative")
        return x * scale

    assert await fetch(2, scale=3) == 6
    assert await breaker.call(fetch.__wrapped__, 4) == 4  # type: ignore[attr-defined]
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch something."
    assert list(inspect.signature(fetch).parameters) == ["x", "scale"]
    with pytest.raises(Boom):
        await fetch(-1)
    with pytest.raises(Boom):
        await breaker.call(fetch.__wrapped__, -1)  # type: ignore[attr-defined]
    with pytest.raises(CircuitOpenError):
        await fetch(5)
    assert calls == [2, 4, -1, -1]
    stats = await breaker.stats()
    assert (stats.success_count, stats.failure_count, stats.rejected_calls) == (2, 2, 1)


def test_decorating_a_sync_function_is_a_clear_error() -> None:
    breaker = CircuitBreaker("sync")

    def not_async() -> None: ...

    with pytest.raises(TypeError, match="async"):
        breaker(not_async)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_names_are_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker(bad)


def test_config_must_be_a_breaker_config() -> None:
    with pytest.raises(TypeError, match="BreakerConfig"):
        CircuitBreaker("x", config={"failure_threshold": 3})  # type: ignore[arg-type]


async def test_transitions_are_logged_with_structlog(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker("logged", failure_threshold=1)
    with structlog.testing.capture_logs() as logs:
        await fail(breaker)
    changes = [entry for entry in logs if entry["event"] == "circuit_state_changed"]
    assert changes == [
        {
            "event": "circuit_state_changed",
            "breaker": "logged",
            "old": "closed",
            "new": "open",
            "trigger": "trip",
            "log_level": "warning",
        }
    ]


async def test_a_failing_listener_never_fails_the_call(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(failure_threshold=1)
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(broken)
    breaker.add_listener(seen.append)
    with structlog.testing.capture_logs() as logs:
        await fail(breaker)
    assert len(seen) == 1
    assert any(entry["event"] == "listener_failed" for entry in logs)
    breaker.remove_listener(broken)
    with pytest.raises(ValueError):
        breaker.remove_listener(broken)


async def test_failure_rate_window_opens_at_threshold(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(
        failure_threshold=None, failure_rate_threshold=0.5, window_size=10, minimum_calls=4
    )
    await fail(breaker)
    await fail(breaker)
    await fail(breaker)  # 3 calls: below minimum_calls, rate 100 % not evaluated
    assert (await breaker.stats()).failure_rate is None
    await succeed(breaker)
    # 3 of 4 failed (0.75 >= 0.5), but a success never trips a circuit: only the next
    # recorded failure (or slow call) re-evaluates the rule.
    assert (await breaker.stats()).state is CLOSED
    await succeed(breaker)
    await succeed(breaker)  # 3/6 = 0.5
    assert (await breaker.stats()).failure_rate == pytest.approx(0.5)
    await fail(breaker)  # 4/7 >= 0.5
    assert (await breaker.stats()).state is OPEN


async def test_count_window_forgets_old_calls(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(
        failure_threshold=None, failure_rate_threshold=0.6, window_size=5, minimum_calls=5
    )
    for _ in range(2):
        await fail(breaker)
    for _ in range(5):
        await succeed(breaker)  # the failures slide out
    assert (await breaker.stats()).failure_rate == 0.0
    for _ in range(2):
        await fail(breaker)
    assert (await breaker.stats()).failure_rate == pytest.approx(0.4)
    assert (await breaker.stats()).state is CLOSED
    await fail(breaker)
    assert (await breaker.stats()).state is OPEN


async def test_time_window_forgets_old_calls(make_breaker: MakeBreaker, clock: FakeClock) -> None:
    breaker = make_breaker(
        failure_threshold=None, failure_rate_threshold=0.5, window_duration=10, minimum_calls=3
    )
    await fail(breaker)
    await fail(breaker)
    clock.advance(11)  # both failures are now out of the window
    await succeed(breaker)
    await succeed(breaker)
    await fail(breaker)
    stats = await breaker.stats()
    assert stats.failure_rate == pytest.approx(1 / 3)
    assert stats.state is CLOSED
    await fail(breaker)  # 2/4 = 0.5
    assert (await breaker.stats()).state is OPEN


async def test_slow_calls_open_the_circuit(make_breaker: MakeBreaker, clock: FakeClock) -> None:
    breaker = make_breaker(
        failure_threshold=None,
        slow_call_duration=2.0,
        slow_call_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
    )

    async def call(duration: float) -> None:
        async with breaker:
            clock.advance(duration)

    await call(0.1)
    await call(2.5)
    await call(0.1)
    stats = await breaker.stats()
    assert stats.slow_call_count == 1
    assert stats.state is CLOSED
    await call(3.0)  # 2 of 4 slow: 0.5 >= 0.5, and the slow call succeeded
    stats = await breaker.stats()
    assert stats.state is OPEN
    assert stats.failure_count == 0


async def test_either_rule_can_open(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker(
        failure_threshold=3, failure_rate_threshold=0.9, window_size=100, minimum_calls=50
    )
    for _ in range(3):
        await fail(breaker)
    assert (await breaker.stats()).state is OPEN


async def test_nested_use_of_one_breaker_reports_each_call_once(
    make_breaker: MakeBreaker,
) -> None:
    breaker = make_breaker(failure_threshold=5)

    @breaker
    async def inner() -> None:
        raise Boom("inner")

    @breaker
    async def outer() -> None:
        await inner()

    with pytest.raises(Boom):
        await outer()
    stats = await breaker.stats()
    assert stats.failure_count == 2
    assert stats.consecutive_failures == 2


async def test_a_trial_cancelled_by_an_anyio_scope_gives_its_permit_back(
    make_breaker: MakeBreaker, clock: FakeClock
) -> None:
    """Level-triggered cancellation (a Timeout policy, a task group) re-cancels every await."""
    import anyio

    from aioresil import CallTimeoutError, Timeout

    breaker = make_breaker(failure_threshold=1, recovery_timeout=1, half_open_max_calls=1)
    await fail(breaker)
    clock.advance(1)

    async def trial() -> None:
        async with breaker:  # the only trial permit
            await anyio.sleep(3600)

    with pytest.raises(CallTimeoutError):
        await Timeout(0.05).call(trial)
    with anyio.move_on_after(0.05) as scope:
        await trial()
    assert scope.cancelled_caught
    await succeed(breaker)  # the permit is free again, not held for trial_lease
