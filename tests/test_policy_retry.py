"""Retry: backoff, retry_after hints, the budget, cancellation, the attempt iterator, testing
mode. Every test runs on asyncio and trio; time is a FakeClock moved by a fake sleep."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest
import trio
from structlog.testing import capture_logs

from aioresil import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    Retry,
    RetryBudget,
    RetryExhausted,
    RetryScheduled,
    constant,
    exponential,
)
from aioresil.testing import EventRecorder, FakeClock, retry_testing, set_retry_testing

from .policy_helpers import BACKENDS, Boom, FakeSleep, Flaky, on_both_backends


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_retry(attempts: int = 3, **options: object) -> tuple[Retry, FakeSleep, FakeClock]:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    options.setdefault("backoff", constant(0.5))
    retry = Retry(attempts, sleep=sleep, clock=clock, **options)  # type: ignore[arg-type]
    return retry, sleep, clock


class RetryAfterError(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__(f"slow down ({retry_after})")
        self.retry_after = retry_after


# ---------------------------------------------------------------------- basics


@on_both_backends
async def test_transient_failures_are_retried_until_success() -> None:
    retry, sleep, _ = make_retry(3)
    flaky = Flaky(2)
    assert await retry.call(flaky) == "ok"
    assert flaky.calls == 3
    assert sleep.delays == [0.5, 0.5]
    stats = retry.stats()
    assert (stats.calls, stats.retries, stats.recovered, stats.gave_up) == (1, 2, 1, 0)


@on_both_backends
async def test_last_error_propagates_unchanged_after_all_attempts() -> None:
    retry, sleep, _ = make_retry(3)
    flaky = Flaky(10)
    with pytest.raises(Boom) as caught:
        await retry.call(flaky)
    assert caught.value is flaky.errors[-1]
    assert flaky.calls == 3
    assert len(sleep.delays) == 2
    assert retry.stats().gave_up == 1


@on_both_backends
async def test_errors_outside_on_are_not_retried() -> None:
    retry, sleep, _ = make_retry(5, on=OSError)
    flaky = Flaky(1)  # raises Boom, not an OSError
    with pytest.raises(Boom):
        await retry.call(flaky)
    assert flaky.calls == 1
    assert sleep.delays == []


@on_both_backends
async def test_on_accepts_a_predicate() -> None:
    retry, _, _ = make_retry(5, on=lambda exc: "transient" in str(exc))
    transient = Flaky(2, error=lambda: Boom("transient"))
    assert await retry.call(transient) == "ok"
    fatal = Flaky(2, error=lambda: Boom("fatal"))
    with pytest.raises(Boom, match="fatal"):
        await retry.call(fatal)
    assert (transient.calls, fatal.calls) == (3, 1)


@on_both_backends
async def test_decorator_keeps_the_function_and_passes_arguments() -> None:
    retry, _, _ = make_retry(2)
    seen: list[tuple[int, str]] = []

    @retry
    async def store(key: int, *, value: str) -> str:
        """Docstring kept."""
        seen.append((key, value))
        if len(seen) == 1:
            raise Boom("once")
        return f"{key}={value}"

    assert await store(1, value="a") == "1=a"
    assert seen == [(1, "a"), (1, "a")]
    assert store.__name__ == "store"
    assert store.__doc__ == "Docstring kept."


def test_decorating_a_sync_function_is_refused() -> None:
    def sync() -> None: ...

    with pytest.raises(TypeError, match="async"):
        Retry()(sync)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- cancellation


@on_both_backends
async def test_cancellation_is_never_retried() -> None:
    retry, sleep, _ = make_retry(5)
    calls = 0

    async def cancelled_inside() -> None:
        nonlocal calls
        calls += 1
        scope.cancel()
        await anyio.lowlevel.checkpoint()  # the cancellation is delivered here

    with anyio.CancelScope() as scope:
        await retry.call(cancelled_inside)
    assert scope.cancelled_caught
    assert calls == 1
    assert sleep.delays == []
    assert retry.stats().retries == 0


@on_both_backends
async def test_cancellation_during_the_backoff_wait_stops_the_retry() -> None:
    retry = Retry(5, backoff=constant(30.0))  # the real anyio.sleep
    flaky = Flaky(10)
    with anyio.move_on_after(0.01) as scope:
        await retry.call(flaky)
    assert scope.cancelled_caught
    assert flaky.calls == 1


@pytest.mark.parametrize(
    "cls", [BaseException, KeyboardInterrupt, asyncio.CancelledError, trio.Cancelled]
)
def test_on_refuses_classes_that_are_not_exceptions(cls: type[BaseException]) -> None:
    with pytest.raises(ValueError, match="never handled"):
        Retry(on=(OSError, cls))


@on_both_backends
async def test_a_predicate_never_sees_cancellation() -> None:
    seen: list[BaseException] = []
    retry, _, _ = make_retry(3, on=lambda exc: seen.append(exc) or True)

    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await retry.call(interrupted)
    assert seen == []


# ---------------------------------------------------------------------- backoff


def test_exponential_backoff_doubles_up_to_max() -> None:
    backoff = exponential(initial=1.0, max=5.0, multiplier=2.0, jitter=0.0)
    assert [backoff.delay(n, 0.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.delay(5000, 0.0) == 5.0  # no overflow on huge attempt numbers


def test_jitter_adds_up_to_jitter_seconds_within_max() -> None:
    backoff = exponential(initial=0.1, max=5.0, jitter=1.0)
    assert backoff.delay(1, 0.0) == pytest.approx(0.1)
    assert backoff.delay(1, 0.5) == pytest.approx(0.6)
    assert backoff.delay(10, 0.99) == 5.0


def test_constant_backoff() -> None:
    assert [constant(0.25).delay(n, 0.7) for n in (1, 2, 9)] == [0.25, 0.25, 0.25]
    assert constant(1.0, jitter=0.5).delay(3, 1.0) == 1.5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: exponential(initial=2.0, max=1.0), "max"),
        (lambda: exponential(jitter=-1.0), "jitter"),
        (lambda: exponential(multiplier=0.5), "multiplier"),
        (lambda: constant(float("nan")), "delay"),
        (lambda: Retry(0), "attempts"),
        (lambda: Retry(timeout=0), "timeout"),
        (lambda: Retry(backoff=1.0), "backoff"),  # type: ignore[arg-type]
        (lambda: RetryBudget(burst=0.5), "burst"),
        (lambda: RetryBudget(ratio=-0.1), "ratio"),
    ],
)
def test_bad_configuration_is_refused_naming_the_problem(build: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build()  # type: ignore[operator]


@on_both_backends
async def test_default_backoff_grows_with_attempts() -> None:
    retry, sleep, _ = make_retry(4, backoff=exponential(initial=0.1, max=5.0, jitter=0.0))
    with pytest.raises(Boom):
        await retry.call(Flaky(10))
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.4])


# ---------------------------------------------------------------------- retry_after


@on_both_backends
async def test_retry_after_hint_replaces_a_shorter_backoff() -> None:
    retry, sleep, _ = make_retry(2, backoff=exponential(initial=0.1, max=10.0, jitter=0.0))
    flaky = Flaky(1, error=lambda: RetryAfterError(3.0))
    assert await retry.call(flaky) == "ok"
    assert sleep.delays == [3.0]


@on_both_backends
async def test_retry_after_hint_is_capped_by_backoff_max() -> None:
    retry, sleep, _ = make_retry(2, backoff=exponential(initial=0.1, max=2.0, jitter=0.0))
    assert await retry.call(Flaky(1, error=lambda: RetryAfterError(100))) == "ok"
    assert sleep.delays == [2.0]


@on_both_backends
async def test_max_retry_after_raises_the_cap_for_a_constant_backoff() -> None:
    retry, sleep, _ = make_retry(3, backoff=constant(0.01), max_retry_after=30.0)
    hints = iter([5.0, 100.0])
    assert await retry.call(Flaky(2, error=lambda: RetryAfterError(next(hints)))) == "ok"
    assert sleep.delays == [5.0, 30.0]


@on_both_backends
async def test_unusable_retry_after_values_are_ignored() -> None:
    retry, sleep, _ = make_retry(4, backoff=constant(0.5))
    hints = iter(["soon", float("nan"), True])
    assert await retry.call(Flaky(3, error=lambda: RetryAfterError(next(hints)))) == "ok"
    assert sleep.delays == [0.5, 0.5, 0.5]


@on_both_backends
async def test_a_breaker_inside_the_retry_is_retried_after_its_retry_after() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    breaker = CircuitBreaker(
        "upstream", config=BreakerConfig(failure_threshold=1, recovery_timeout=2.0), clock=clock
    )
    retry = Retry(
        3, backoff=exponential(initial=0.01, max=10.0, jitter=0.0), sleep=sleep, clock=clock
    )
    flaky = Flaky(1)
    errors: list[BaseException] = []

    async def guarded() -> str:
        try:
            return await breaker.call(flaky)
        except Exception as error:
            errors.append(error)
            raise

    assert await retry.call(guarded) == "ok"
    # attempt 1 fails and opens the circuit; attempt 2 is rejected with retry_after 1.99 s,
    # which the retry waits out; attempt 3 is the trial call and succeeds.
    assert isinstance(errors[1], CircuitOpenError)
    assert sleep.delays == pytest.approx([0.01, 1.99])
    assert flaky.calls == 2


# ---------------------------------------------------------------------- timeout


@on_both_backends
async def test_retry_timeout_stops_before_a_wait_that_would_end_after_it() -> None:
    retry, sleep, _ = make_retry(10, backoff=constant(1.0), timeout=2.5)
    events = EventRecorder()
    retry.add_listener(events)  # type: ignore[arg-type]
    flaky = Flaky(100)
    with pytest.raises(Boom):
        await retry.call(flaky)
    assert flaky.calls == 3  # t=0, t=1, t=2; the next wait would end at 3 > 2.5
    assert sleep.delays == [1.0, 1.0]
    [exhausted] = events.of_type(RetryExhausted)
    assert (exhausted.attempts, exhausted.reason) == (3, "timeout")


@on_both_backends
async def test_retry_after_longer_than_the_time_left_gives_up_at_once() -> None:
    retry, sleep, _ = make_retry(5, backoff=exponential(max=60.0), timeout=5.0)
    flaky = Flaky(1, error=lambda: RetryAfterError(30.0))
    with pytest.raises(RetryAfterError):
        await retry.call(flaky)
    assert flaky.calls == 1
    assert sleep.delays == []


# ---------------------------------------------------------------------- budget


@on_both_backends
async def test_budget_exhaustion_stops_retries() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, burst=1.0, clock=clock)
    retry = Retry(3, backoff=constant(0.0), budget=budget, sleep=FakeSleep(clock), clock=clock)
    attempts = []
    for _ in range(3):
        flaky = Flaky(100)
        with pytest.raises(Boom):
            await retry.call(flaky)
        attempts.append(flaky.calls)
    # call 1: one saved token -> one retry; call 2: 0.5 tokens -> none; call 3: 1.0 -> one.
    assert attempts == [2, 1, 2]
    assert retry.stats().budget_exhausted == 3
    stats = budget.stats()
    assert (stats.deposits, stats.withdrawals, stats.rejections) == (3, 2, 3)


@on_both_backends
async def test_budget_is_shared_and_refills_with_time() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, burst=2.0, clock=clock)
    one = Retry(5, backoff=constant(0.0), budget=budget, sleep=FakeSleep(clock), clock=clock)
    other = Retry(5, backoff=constant(0.0), budget=budget, sleep=FakeSleep(clock), clock=clock)
    first = Flaky(100)
    with pytest.raises(Boom):
        await one.call(first)
    assert first.calls == 3  # the two saved tokens
    second = Flaky(100)
    with pytest.raises(Boom):
        await other.call(second)
    assert second.calls == 1  # the shared budget is empty
    clock.advance(1.0)
    third = Flaky(100)
    with pytest.raises(Boom):
        await other.call(third)
    assert third.calls == 2  # one token accrued in one second


@on_both_backends
async def test_budget_bounds_retries_to_the_ratio_during_an_outage() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, burst=1.0, clock=clock)
    retry = Retry(4, backoff=constant(0.0), budget=budget, sleep=FakeSleep(clock), clock=clock)
    calls = 200
    for _ in range(calls):
        with pytest.raises(Boom):
            await retry.call(Flaky(10**6))
    retries = retry.stats().retries
    assert 0.2 * calls - 1 <= retries <= 1 + 0.2 * calls  # never 3 retries per call


# ---------------------------------------------------------------------- attempt iterator


@on_both_backends
async def test_attempt_iterator_retries_a_block() -> None:
    retry, sleep, _ = make_retry(5)
    flaky = Flaky(2)
    numbers = []
    async for attempt in retry:
        async with attempt:
            numbers.append(attempt.number)
            result = await flaky()
    assert result == "ok"
    assert numbers == [1, 2, 3]
    assert sleep.delays == [0.5, 0.5]
    assert retry.stats().recovered == 1


@on_both_backends
async def test_attempt_iterator_raises_on_the_last_attempt() -> None:
    retry, _, _ = make_retry(3)
    flaky = Flaky(100)

    async def block() -> None:
        async for attempt in retry:
            async with attempt:
                await flaky()

    with pytest.raises(Boom) as caught:
        await block()
    assert caught.value is flaky.errors[-1]
    assert flaky.calls == 3


@on_both_backends
async def test_attempt_iterator_does_not_swallow_non_retryable_errors() -> None:
    retry, _, _ = make_retry(3, on=OSError)
    runs = 0

    async def block() -> None:
        nonlocal runs
        async for attempt in retry:
            async with attempt:
                runs += 1
                raise Boom("not an OSError")

    with pytest.raises(Boom):
        await block()
    assert runs == 1


@on_both_backends
async def test_attempt_iterator_never_swallows_cancellation() -> None:
    retry, sleep, _ = make_retry(3)
    runs = 0
    with anyio.CancelScope() as scope:
        async for attempt in retry:
            async with attempt:
                runs += 1
                scope.cancel()
                await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert runs == 1
    assert sleep.delays == []


@on_both_backends
async def test_an_attempt_cannot_be_entered_twice() -> None:
    retry, _, _ = make_retry(3)
    async for attempt in retry:
        async with attempt:
            pass
        with pytest.raises(RuntimeError, match="already used"):
            async with attempt:
                raise Boom("again")


# ---------------------------------------------------------------------- testing mode


@on_both_backends
async def test_retry_testing_makes_waits_zero_and_caps_attempts() -> None:
    retry = Retry(5, backoff=constant(3600.0))  # real anyio.sleep: would hang if it waited
    events = EventRecorder()
    retry.add_listener(events)  # type: ignore[arg-type]
    with retry_testing(attempts=2):
        flaky = Flaky(100)
        with pytest.raises(Boom):
            await retry.call(flaky)
        assert flaky.calls == 2
        assert [e.delay for e in events.of_type(RetryScheduled)] == [0.0]
    assert retry.attempts == 5  # restored after the block


@on_both_backends
async def test_set_retry_testing_switches_on_and_off() -> None:
    retry = Retry(3, backoff=constant(3600.0))
    set_retry_testing(True)
    try:
        flaky = Flaky(2)
        assert await retry.call(flaky) == "ok"
        assert flaky.calls == 3
    finally:
        set_retry_testing(False)
    assert retry.attempts == 3


def test_set_retry_testing_refuses_bad_attempts() -> None:
    with pytest.raises(ValueError, match="attempts"):
        set_retry_testing(True, attempts=0)


# ---------------------------------------------------------------------- observability


@on_both_backends
async def test_retries_emit_events_and_structlog_lines() -> None:
    retry, _, clock = make_retry(2, name="payments")
    events = EventRecorder()
    retry.add_listener(events)  # type: ignore[arg-type]
    with capture_logs() as logs, pytest.raises(Boom):
        await retry.call(Flaky(5))
    [scheduled] = events.of_type(RetryScheduled)
    assert (scheduled.name, scheduled.attempt, scheduled.delay) == ("payments", 1, 0.5)
    assert scheduled.at == clock.time() - 0.5  # stamped before the wait
    [exhausted] = events.of_type(RetryExhausted)
    assert (exhausted.attempts, exhausted.reason) == (2, "attempts")
    names = [(entry["event"], entry["policy"]) for entry in logs]
    assert names == [("retry_scheduled", "payments"), ("retry_exhausted", "payments")]
    assert logs[0]["attempt"] == 1
    assert logs[0]["delay"] == 0.5


@on_both_backends
async def test_a_failing_listener_does_not_break_the_retry() -> None:
    retry, _, _ = make_retry(2)

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    retry.add_listener(broken)
    with capture_logs() as logs:
        assert await retry.call(Flaky(1)) == "ok"
    assert "listener_failed" in [entry["event"] for entry in logs]
    retry.remove_listener(broken)
