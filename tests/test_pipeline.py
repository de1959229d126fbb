"""pipeline() and Fallback: composition outermost first, order changes behaviour, the final
failure goes to the DLQ. Runs on asyncio and trio (the breaker on the memory backend too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from aioresil import (
    BreakerConfig,
    Bulkhead,
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    Policy,
    RateLimiter,
    Retry,
    SupportsPush,
    Timeout,
    constant,
    pipeline,
)
from aioresil.testing import FakeClock

from .policy_helpers import BACKENDS, Boom, FakeSleep, Flaky, on_both_backends

TINY = 0.02


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Pushed:
    task_type: str
    payload: Any
    error: BaseException | str
    attempts: int
    task_id: str | None
    metadata: Mapping[str, Any] | None


class FakeDLQ:
    """Records pushes with the dead letter queue's signature; can be told to fail."""

    def __init__(self, failing: bool = False) -> None:
        self.pushed: list[Pushed] = []
        self.failing = failing

    async def push(
        self,
        task_type: str,
        payload: Any,
        error: BaseException | str,
        *,
        attempts: int = 1,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        if self.failing:
            raise ValueError("payload is not JSON-serializable")
        self.pushed.append(Pushed(task_type, payload, error, attempts, task_id, metadata))
        return f"entry-{len(self.pushed)}"


def fast_retry(attempts: int = 3, clock: FakeClock | None = None) -> tuple[Retry, FakeSleep]:
    clock = clock or FakeClock()
    sleep = FakeSleep(clock)
    return Retry(attempts, backoff=constant(0.1), sleep=sleep, clock=clock), sleep


# ---------------------------------------------------------------------- composition


@on_both_backends
async def test_stages_wrap_outermost_first() -> None:
    trace: list[str] = []

    class Tracer:
        def __init__(self, label: str) -> None:
            self.label = label

        async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            trace.append(f"{self.label}>")
            try:
                return await fn(*args, **kwargs)
            finally:
                trace.append(f"<{self.label}")

    async def work(x: int, *, y: int) -> int:
        trace.append("work")
        return x + y

    guarded = pipeline(Tracer("a"), Tracer("b"), Tracer("c"))
    assert await guarded.call(work, 1, y=2) == 3
    assert trace == ["a>", "b>", "c>", "work", "<c", "<b", "<a"]


@on_both_backends
async def test_a_pipeline_is_a_decorator_and_a_stage_itself() -> None:
    retry, _ = fast_retry(3)
    inner = pipeline(Timeout(60), retry)
    outer = pipeline(Fallback(lambda error: "fallback"), inner)
    flaky = Flaky(2)

    @outer
    async def fetch(key: str) -> str:
        """Fetch a key."""
        return await flaky()

    assert await fetch("k") == "ok"
    assert (fetch.__name__, fetch.__doc__) == ("fetch", "Fetch a key.")
    assert isinstance(inner, Policy)
    assert isinstance(CircuitBreaker("b"), Policy)


# ---------------------------------------------------------------------- order matters


@on_both_backends
async def test_timeout_outside_retry_bounds_the_whole_call() -> None:
    retry = Retry(5, backoff=constant(0.0))
    total, per_attempt = Timeout(TINY), Timeout(60)
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep(60)

    with pytest.raises(CallTimeoutError):
        await pipeline(total, retry, per_attempt).call(slow)
    assert calls == 1  # the retry was cancelled with its attempt, not retried
    assert retry.stats().retries == 0


@on_both_backends
async def test_timeout_inside_retry_bounds_each_attempt_and_is_retried() -> None:
    retry = Retry(3, backoff=constant(0.0))
    per_attempt = Timeout(TINY)
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep(60)

    with pytest.raises(CallTimeoutError):
        await pipeline(retry, per_attempt).call(slow)
    assert calls == 3
    assert per_attempt.stats().timed_out == 3


@on_both_backends
async def test_breaker_outside_retry_counts_one_failure_per_call() -> None:
    breaker = CircuitBreaker("outside", config=BreakerConfig(failure_threshold=10))
    retry, _ = fast_retry(3)
    with pytest.raises(Boom):
        await pipeline(breaker, retry).call(Flaky(100))
    assert (await breaker.stats()).failure_count == 1


@on_both_backends
async def test_breaker_inside_retry_counts_every_attempt() -> None:
    breaker = CircuitBreaker("inside", config=BreakerConfig(failure_threshold=10))
    retry, _ = fast_retry(3)
    with pytest.raises(Boom):
        await pipeline(retry, breaker).call(Flaky(100))
    assert (await breaker.stats()).failure_count == 3


@on_both_backends
async def test_an_open_breaker_inside_retry_is_waited_out() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "recovering",
        config=BreakerConfig(failure_threshold=1, recovery_timeout=1.0),
        clock=clock,
    )
    sleep = FakeSleep(clock)
    retry = Retry(3, backoff=constant(0.1), max_retry_after=5.0, sleep=sleep, clock=clock)
    flaky = Flaky(1)
    assert await pipeline(retry, breaker).call(flaky) == "ok"
    assert sleep.delays == pytest.approx([0.1, 0.9])
    assert flaky.calls == 2  # the rejected attempt never reached the upstream


@on_both_backends
async def test_bulkhead_inside_retry_frees_its_slot_while_the_retry_waits() -> None:
    bulkhead = Bulkhead(1)
    active_during_waits: list[int] = []
    clock = FakeClock()

    async def sleep(seconds: float) -> None:
        active_during_waits.append(bulkhead.stats().active)
        clock.advance(seconds)
        await anyio.lowlevel.checkpoint()

    retry = Retry(3, backoff=constant(0.1), sleep=sleep, clock=clock)
    assert await pipeline(retry, bulkhead).call(Flaky(2)) == "ok"
    assert active_during_waits == [0, 0]


@on_both_backends
async def test_rate_limiter_inside_retry_spends_a_token_per_attempt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, per=1.0, burst=10, clock=clock)
    retry = Retry(3, backoff=constant(0.0), sleep=FakeSleep(clock), clock=clock)
    with pytest.raises(Boom):
        await pipeline(retry, limiter).call(Flaky(100))
    assert limiter.stats().allowed == 3


# ---------------------------------------------------------------------- fallback


@on_both_backends
async def test_fallback_answers_the_final_failure_after_retries() -> None:
    seen: list[BaseException] = []

    def handler(error: Exception) -> str:
        seen.append(error)
        return "cached"

    retry, _ = fast_retry(3)
    flaky = Flaky(100)
    fallback = Fallback(handler)
    assert await pipeline(fallback, retry).call(flaky) == "cached"
    assert seen == [flaky.errors[-1]]
    assert flaky.calls == 3
    stats = fallback.stats()
    assert (stats.calls, stats.fallbacks) == (1, 1)


@on_both_backends
async def test_fallback_handler_may_be_async_and_filtered() -> None:
    async def handler(error: Exception) -> str:
        await anyio.lowlevel.checkpoint()
        return f"open: {type(error).__name__}"

    fallback = Fallback(handler, on=CircuitOpenError)
    breaker = CircuitBreaker("fb")
    await breaker.force_open()
    assert await pipeline(fallback, breaker).call(Flaky(0)) == "open: CircuitOpenError"
    with pytest.raises(Boom):
        await fallback.call(Flaky(1))  # not a CircuitOpenError: propagates


@on_both_backends
async def test_fallback_never_handles_cancellation() -> None:
    fallback = Fallback(lambda error: "no")

    async def cancelled() -> str:
        scope.cancel()
        await anyio.lowlevel.checkpoint()
        return "unreachable"  # pragma: no cover

    with anyio.CancelScope() as scope:
        await fallback.call(cancelled)
    assert scope.cancelled_caught
    assert fallback.stats().fallbacks == 0
    with pytest.raises(ValueError, match="never handled"):
        Fallback(lambda error: None, on=BaseException)


# ---------------------------------------------------------------------- dead letter queue


@on_both_backends
async def test_final_failure_goes_to_the_dlq_with_attempts_and_the_last_error() -> None:
    dlq = FakeDLQ()
    retry, _ = fast_retry(3)
    guarded = pipeline(Timeout(60), retry, Bulkhead(5), to_dlq=(dlq, "charge"), name="payments")
    flaky = Flaky(100)

    async def charge(card: str, *, cents: int) -> str:
        return await flaky()

    with capture_logs() as logs, pytest.raises(Boom) as caught:
        await guarded.call(charge, "card-1", cents=250)
    assert caught.value is flaky.errors[-1]  # re-raised unchanged after the push
    [entry] = dlq.pushed
    assert entry.task_type == "charge"
    assert entry.payload == {"args": ["card-1"], "kwargs": {"cents": 250}}
    assert entry.error is flaky.errors[-1]
    assert entry.attempts == 3
    assert entry.metadata == {"pipeline": "payments", "function": charge.__qualname__}
    assert "dead_lettered" in [line["event"] for line in logs]
    stats = guarded.stats()
    assert (stats.calls, stats.failures, stats.dead_lettered, stats.dlq_errors) == (1, 1, 1, 0)


@on_both_backends
async def test_dlq_counts_one_attempt_without_a_retry_and_uses_a_payload_builder() -> None:
    dlq = FakeDLQ()
    guarded = pipeline(
        Timeout(60),
        to_dlq=(dlq, "sync"),
        dlq_payload=lambda user_id, **_: {"user": user_id},
    )
    with pytest.raises(Boom):
        await guarded.call(Flaky(1), 42, verbose=True)
    assert [(e.payload, e.attempts) for e in dlq.pushed] == [({"user": 42}, 1)]


@on_both_backends
async def test_nothing_goes_to_the_dlq_on_success_fallback_or_cancellation() -> None:
    dlq = FakeDLQ()
    retry, _ = fast_retry(2)
    assert await pipeline(retry, to_dlq=(dlq, "t")).call(Flaky(1)) == "ok"
    # A Fallback for some errors may sit inside the dead-lettering pipeline (one for every
    # error is refused there: see tests/test_pipeline_order.py).
    handled = pipeline(Fallback(lambda error: "default", on=Boom), retry, to_dlq=(dlq, "t"))
    assert await handled.call(Flaky(100)) == "default"

    async def cancelled() -> None:
        scope.cancel()
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as scope:
        await pipeline(retry, to_dlq=(dlq, "t")).call(cancelled)
    assert dlq.pushed == []


@on_both_backends
async def test_a_failing_dlq_push_never_replaces_the_users_error() -> None:
    dlq = FakeDLQ(failing=True)
    guarded = pipeline(Timeout(60), to_dlq=(dlq, "t"))
    flaky = Flaky(1)
    with capture_logs() as logs, pytest.raises(Boom) as caught:
        await guarded.call(flaky)
    assert caught.value is flaky.errors[0]
    assert "dlq_push_failed" in [line["event"] for line in logs]
    assert guarded.stats().dlq_errors == 1


# ---------------------------------------------------------------------- the recommended stack


@on_both_backends
async def test_the_recommended_pipeline_recovers_from_a_flaky_upstream() -> None:
    clock = FakeClock()
    # 12 tasks fail 12 attempts in all; trio shuffles its run queue, so any of them may be
    # consecutive: a threshold above 12 keeps the circuit closed on every schedule.
    breaker = CircuitBreaker("upstream", config=BreakerConfig(failure_threshold=13), clock=clock)
    retry = Retry(4, backoff=constant(0.1), sleep=FakeSleep(clock), clock=clock)
    bulkhead = Bulkhead(2, max_waiting=10)
    guarded = pipeline(
        Fallback(lambda error: "fallback"), Timeout(60), retry, breaker, bulkhead, Timeout(30)
    )
    flakies = [Flaky(n % 3) for n in range(12)]
    results: list[str] = []

    async def one(flaky: Flaky) -> None:
        results.append(await guarded.call(flaky))

    async with anyio.create_task_group() as group:
        for flaky in flakies:
            group.start_soon(one, flaky)
    assert results == ["ok"] * 12
    assert retry.stats().retries == sum(n % 3 for n in range(12))
    assert bulkhead.stats().active == 0


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: pipeline(), "at least one stage"),
        (lambda: pipeline(Timeout(1), object()), "stage 1"),
        (lambda: pipeline(Timeout(1), to_dlq=FakeDLQ()), "pair"),
        (lambda: pipeline(Timeout(1), to_dlq=(object(), "t")), "push"),
        (lambda: pipeline(Timeout(1), to_dlq=(FakeDLQ(), "")), "task_type"),
        (lambda: pipeline(Timeout(1), dlq_payload="args"), "dlq_payload"),
        (lambda: Fallback("value"), "handler"),
    ],
)
def test_bad_input_is_refused_naming_the_problem(build: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_the_fake_dlq_matches_the_protocol() -> None:
    assert isinstance(FakeDLQ(), SupportsPush)
