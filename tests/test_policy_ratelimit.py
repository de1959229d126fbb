"""In-process RateLimiter: a token bucket on a FakeClock; refusals carry an exact retry_after,
waiters reserve their token. Runs on asyncio and trio."""

from __future__ import annotations

import pickle

import pytest
from structlog.testing import capture_logs

from aioresil import RateLimited, RateLimiter, RateLimitExceededError, Retry, constant
from aioresil.testing import EventRecorder, FakeClock

from .policy_helpers import BACKENDS, FakeSleep, on_both_backends


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def noop() -> str:
    return "ran"


@on_both_backends
async def test_a_burst_passes_then_calls_are_refused_with_an_exact_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, per=1.0, burst=2, clock=clock, name="api")
    events = EventRecorder()
    limiter.add_listener(events)  # type: ignore[arg-type]
    assert [await limiter.call(noop), await limiter.call(noop)] == ["ran", "ran"]
    with capture_logs() as logs, pytest.raises(RateLimitExceededError) as caught:
        await limiter.call(noop)
    assert caught.value.name == "api"
    assert caught.value.retry_after == pytest.approx(0.5)
    assert [entry["event"] for entry in logs] == ["rate_limited"]
    assert [e.retry_after for e in events.of_type(RateLimited)] == [pytest.approx(0.5)]
    clock.advance(0.5)
    assert await limiter.call(noop) == "ran"
    stats = limiter.stats()
    assert (stats.allowed, stats.limited, stats.waited) == (3, 1, 0)


@on_both_backends
async def test_tokens_refill_at_rate_per_period_up_to_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, per=60.0, burst=3, clock=clock)  # one token every 6 s
    for _ in range(3):
        await limiter.acquire()
    clock.advance(600)  # far longer than a full refill: still only `burst` tokens
    for _ in range(3):
        await limiter.acquire()
    with pytest.raises(RateLimitExceededError) as caught:
        await limiter.acquire()
    assert caught.value.retry_after == pytest.approx(6.0)


@on_both_backends
async def test_waiters_reserve_tokens_in_order_within_max_wait() -> None:
    clock = FakeClock()
    sleep = FakeSleep()  # records waits without moving the clock: the calls overlap
    limiter = RateLimiter(1, per=1.0, burst=1, max_wait=1.5, clock=clock, sleep=sleep)
    await limiter.acquire()  # the burst token
    await limiter.acquire()  # reserves the token due in 1 s
    with pytest.raises(RateLimitExceededError) as caught:
        await limiter.acquire()  # the next is due in 2 s > max_wait
    assert sleep.delays == [pytest.approx(1.0)]
    assert caught.value.retry_after == pytest.approx(2.0)
    assert limiter.stats().waited == 1


@on_both_backends
async def test_a_retry_around_the_limiter_waits_exactly_retry_after() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)
    limiter = RateLimiter(4, per=1.0, burst=1, clock=clock)
    retry = Retry(3, backoff=constant(0.01), max_retry_after=1.0, sleep=sleep, clock=clock)
    results = [await retry.call(limiter.call, noop) for _ in range(3)]
    assert results == ["ran", "ran", "ran"]
    assert sleep.delays == pytest.approx([0.25, 0.25])


@on_both_backends
async def test_async_with_form_takes_a_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=1, clock=clock)
    async with limiter:
        pass
    with pytest.raises(RateLimitExceededError):
        async with limiter:
            pass  # pragma: no cover


def test_rate_limit_exceeded_pickles_with_its_fields() -> None:
    error = pickle.loads(pickle.dumps(RateLimitExceededError("api", 0.25)))
    assert (error.name, error.retry_after) == ("api", 0.25)


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((0,), {}, "rate"),
        ((1, 0), {}, "per"),
        ((1,), {"burst": 0.5}, "burst"),
        ((1,), {"max_wait": -1}, "max_wait"),
        ((True,), {}, "rate"),
        ((1,), {"backend": "redis://"}, "backend"),
    ],
)
def test_bad_configuration_is_refused(
    args: tuple[float, ...], options: dict[str, object], message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        RateLimiter(*args, **options)  # type: ignore[arg-type]


async def test_a_waiter_cancelled_while_waiting_gives_its_token_back() -> None:
    import asyncio

    from aioresil import RateLimiter
    from aioresil.testing import FakeClock

    clock = FakeClock()
    gate = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await gate.wait()  # never released: the waiter is cancelled first

    limiter = RateLimiter(1, per=1.0, burst=1, max_wait=10, clock=clock, sleep=sleep)
    await limiter.acquire()  # the only token
    waiter = asyncio.create_task(limiter.acquire())  # reserves the next one and waits
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    clock.advance(1.0)  # one token refilled: it must be free, not owed to the cancelled waiter
    async with asyncio.timeout(1):
        await limiter.acquire()  # no wait: the sleep would block forever
    assert limiter.stats().allowed == 2
