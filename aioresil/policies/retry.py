"""Retry with exponential backoff and jitter, ``retry_after`` hints and a shared retry budget.

Why these rules:

* **Cancellation is never retried.** Only ``Exception`` instances are ever considered (and
  ``on=`` refuses classes outside ``Exception``): a cancelled task must stop, not try again.
* **A ``retry_after`` hint wins over the computed backoff.** An exception carrying a numeric
  ``retry_after`` (``CircuitOpenError`` from a breaker inside the retry,
  ``RateLimitExceededError``, ``BulkheadFullError``, your own 429 error) is waited out: the wait is
  ``max(backoff, retry_after)``, the hint capped by ``max_retry_after`` (the backoff's
  ``max`` unless you say otherwise). If the wait would end after
  the retry's ``timeout``, the retry gives up at once instead of sleeping for nothing.
* **A retry budget stops retries from amplifying an outage.** Every call deposits ``ratio``
  tokens, each retry takes one, so with ``RetryBudget(ratio=0.2)`` retries add at most 20% load
  (plus a small ``min_per_second`` floor so a quiet service can still retry). Share one budget
  between all the retries that hit one dependency. A
  :class:`~aioresil.fleet.FleetRetryBudget` does the same for every process of a fleet
  (successes and retries counted in Redis), so the fleet's amplification stays bounded
  however many processes retry.
* **A ``with`` block cannot be run twice**, so retrying a block is an attempt iterator
  (``async for attempt in Retry(...): async with attempt: ...``), never an ``async with`` that
  silently does not retry.

Time is anyio's: the default sleep is ``anyio.sleep`` (asyncio and trio alike); tests inject
``sleep=`` and ``clock=``, or switch every retry to zero-wait with
``aioresil.testing.set_retry_testing(True)``.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import anyio

from ..clock import Clock, SystemClock
from .base import (
    ExceptionFilter,
    PolicyBase,
    Statistics,
    StatsAlias,
    check_seconds,
    exception_filter,
    log,
)
from .events import RetryExhausted, RetryScheduled

__all__ = [
    "Attempt",
    "Backoff",
    "Retry",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryStatistics",
    "SharedRetryBudget",
    "constant",
    "exponential",
]

P = ParamSpec("P")
R = TypeVar("R")

Sleep = Callable[[float], Awaitable[Any]]


# ---------------------------------------------------------------------- backoff


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before the next attempt; build it with :func:`exponential` or
    :func:`constant`.

    The wait after failed attempt ``n`` (1-based) is
    ``min(max, initial * multiplier ** (n - 1) + uniform(0, jitter))``.
    """

    initial: float
    max: float
    multiplier: float
    jitter: float

    def delay(self, attempt: int, rand: float) -> float:
        """The wait after failed attempt ``attempt``; ``rand`` is uniform in ``[0, 1)``."""
        try:
            base = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            base = self.max
        return min(self.max, base + self.jitter * rand)


def exponential(
    initial: float = 0.1, *, max: float = 5.0, multiplier: float = 2.0, jitter: float = 1.0
) -> Backoff:
    """Exponential backoff with additive jitter (stamina's defaults).

    Args:
        initial: the first wait, in seconds.
        max: no wait is longer (``retry_after`` hints are capped by it too).
        multiplier: growth factor per attempt (>= 1).
        jitter: up to this many random seconds are added, so retries of many clients spread.

    Example::

        Retry(5, backoff=exponential(initial=0.05, max=2.0, jitter=0.1))
    """
    initial = check_seconds("initial", initial, allow_zero=True)
    cap = check_seconds("max", max, allow_zero=True)
    jitter = check_seconds("jitter", jitter, allow_zero=True)
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
        raise TypeError(f"multiplier must be a number, got {multiplier!r}")
    if not math.isfinite(multiplier) or multiplier < 1:
        raise ValueError(f"multiplier must be finite and >= 1, got {multiplier!r}")
    if cap < initial:
        raise ValueError(f"max ({cap}) must be >= initial ({initial})")
    return Backoff(initial, cap, float(multiplier), jitter)


def constant(delay: float, *, jitter: float = 0.0) -> Backoff:
    """The same wait before every retry, plus up to ``jitter`` random seconds.

    Example::

        Retry(3, backoff=constant(0.5))
    """
    delay = check_seconds("delay", delay, allow_zero=True)
    jitter = check_seconds("jitter", jitter, allow_zero=True)
    return Backoff(delay, delay + jitter, 1.0, jitter)


# ---------------------------------------------------------------------- budget


@dataclass(frozen=True, slots=True)
class RetryBudgetStatistics(Statistics):
    """A budget at one moment: its balance and what it let through or refused."""

    tokens: float
    deposits: int
    withdrawals: int
    rejections: int


class RetryBudget(StatsAlias):
    """A token bucket of retries, shared by every :class:`Retry` that uses it.

    Every call through a retry deposits ``ratio`` tokens; every retry withdraws one; time adds
    ``min_per_second`` tokens a second; the balance never exceeds ``burst`` (and starts there).
    So over any stretch the retries are at most ``burst + ratio * calls + min_per_second * t``:
    when a dependency is down, retries add ``ratio`` extra load instead of multiplying it.

    The budget is per process (it guards this process's load on the dependency).

    Args:
        ratio: tokens deposited per call (0.2 = at most 20% extra calls from retries).
        min_per_second: tokens added per second regardless of traffic.
        burst: the most tokens that can be saved up.
        clock: time source (``aioresil.testing.FakeClock`` in tests).

    Example::

        budget = RetryBudget(ratio=0.1)
        fetch_retry = Retry(4, budget=budget)
        store_retry = Retry(2, budget=budget)   # the same dependency: one budget
    """

    __slots__ = (
        "_clock",
        "_deposits",
        "_last",
        "_rejections",
        "_tokens",
        "_withdrawals",
        "burst",
        "min_per_second",
        "ratio",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        min_per_second: float = 1.0,
        burst: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.ratio = check_seconds("ratio", ratio, allow_zero=True)
        self.min_per_second = check_seconds("min_per_second", min_per_second, allow_zero=True)
        self.burst = check_seconds("burst", burst)
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1 (one retry), got {burst!r}")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._tokens = self.burst
        self._last = self._clock.monotonic()
        self._deposits = 0
        self._withdrawals = 0
        self._rejections = 0

    def _refill(self) -> float:
        now = self._clock.monotonic()
        tokens = self._tokens
        if self.min_per_second and now > self._last:
            tokens = min(self.burst, tokens + (now - self._last) * self.min_per_second)
        self._last = now
        return tokens

    def deposit(self) -> None:
        """Credit one call (a :class:`Retry` does this for every call it runs)."""
        self._deposits += 1
        self._tokens = min(self.burst, self._refill() + self.ratio)

    def try_withdraw(self) -> bool:
        """Take one retry's token; ``False`` (and nothing taken) when the budget is empty."""
        tokens = self._refill()
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            self._withdrawals += 1
            return True
        self._tokens = tokens
        self._rejections += 1
        return False

    def stats(self) -> RetryBudgetStatistics:
        return RetryBudgetStatistics(
            tokens=self._refill_peek(),
            deposits=self._deposits,
            withdrawals=self._withdrawals,
            rejections=self._rejections,
        )

    def _refill_peek(self) -> float:
        elapsed = max(self._clock.monotonic() - self._last, 0.0)
        return min(self.burst, self._tokens + elapsed * self.min_per_second)

    def __repr__(self) -> str:
        return f"RetryBudget(ratio={self.ratio}, tokens={self._refill_peek():.2f})"


@runtime_checkable
class SharedRetryBudget(Protocol):
    """A budget kept outside this process (:class:`~aioresil.fleet.FleetRetryBudget`).

    It counts *successful* calls (``deposit``, no I/O) and answers a retry question with one
    round trip (``try_withdraw``).
    """

    def deposit(self, successes: int = 1) -> None: ...

    async def try_withdraw(self) -> bool: ...


# ---------------------------------------------------------------------- testing switch


class _TestingMode:
    """Process-wide switch flipped by :func:`aioresil.testing.set_retry_testing`."""

    __slots__ = ("attempts", "enabled")

    def __init__(self) -> None:
        self.enabled = False
        self.attempts: int | None = None


TESTING = _TestingMode()


# ---------------------------------------------------------------------- retry


@dataclass(frozen=True, slots=True)
class RetryStatistics(Statistics):
    """A retry's counters since it was created.

    ``recovered`` calls succeeded after at least one retry; ``gave_up`` calls ended with the
    last error (``budget_exhausted`` of them because the budget was empty).
    """

    name: str
    calls: int
    retries: int
    recovered: int
    gave_up: int
    budget_exhausted: int


def retry_after_of(exc: BaseException) -> float | None:
    """The ``retry_after`` seconds an exception carries, when it is a usable number."""
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, bool) or not isinstance(hint, int | float):
        return None
    hint = float(hint)
    if not math.isfinite(hint) or hint < 0:
        return None
    return hint


class Retry(PolicyBase):
    """Run a call again when it fails with a retryable error, waiting longer each time.

    Args:
        attempts: total tries, the first included (>= 1).
        on: which failures are retried: an ``Exception`` class, a tuple of them, or a
            predicate ``exc -> bool``. Cancellation never is.
        backoff: waits between tries; ``exponential(initial=0.1, max=5.0, jitter=1.0)`` by
            default.
        timeout: seconds for the whole retry, waits included; no retry is started whose wait
            would end after it. (It does not cancel a running attempt: put a
            :class:`Timeout` outside the retry for that.)
        budget: a :class:`RetryBudget`, shared with the other retries to the same dependency,
            or a :class:`~aioresil.fleet.FleetRetryBudget` shared by every process.
        max_retry_after: the longest ``retry_after`` hint waited out (longer hints are cut to
            it); the backoff's ``max`` by default. Raise it for a ``constant()`` backoff, or
            to wait out a breaker whose ``recovery_timeout`` is longer than that max.
        name: for logs, events and statistics.
        sleep: ``async sleep(seconds)``; ``anyio.sleep`` by default.
        clock: time source for ``timeout`` and event timestamps.

    Example::

        retry = Retry(3, on=httpx.TransportError)

        @retry
        async def fetch(url: str) -> bytes: ...

        async for attempt in Retry(5, on=OSError):   # retrying a block
            async with attempt:
                await connect()
    """

    __slots__ = (
        "_attempts",
        "_backoff",
        "_budget",
        "_budget_exhausted",
        "_calls",
        "_gave_up",
        "_max_hint",
        "_random",
        "_recovered",
        "_retries",
        "_retryable",
        "_shared",
        "_sleep",
        "_timeout",
    )

    def __init__(
        self,
        attempts: int = 3,
        *,
        on: type[BaseException] | tuple[type[BaseException], ...] | ExceptionFilter = (Exception,),
        backoff: Backoff | None = None,
        timeout: float | None = None,
        budget: RetryBudget | SharedRetryBudget | None = None,
        max_retry_after: float | None = None,
        name: str = "retry",
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, clock)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
        if backoff is None:
            backoff = exponential()
        elif not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must come from exponential() or constant(), got {backoff!r}")
        shared: SharedRetryBudget | None = None
        if isinstance(budget, SharedRetryBudget) and inspect.iscoroutinefunction(
            budget.try_withdraw
        ):
            shared, budget = budget, None
        elif budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be a RetryBudget or a FleetRetryBudget, got {budget!r}")
        if sleep is not None and not callable(sleep):
            raise TypeError(f"sleep must be an async callable, got {sleep!r}")
        self._attempts = attempts
        self._retryable = exception_filter(on, f"Retry {name!r}")
        self._backoff = backoff
        self._timeout = None if timeout is None else check_seconds("timeout", timeout)
        self._budget = budget
        self._shared = shared
        self._max_hint = (
            backoff.max
            if max_retry_after is None
            else check_seconds("max_retry_after", max_retry_after, allow_zero=True)
        )
        self._sleep: Sleep = sleep if sleep is not None else anyio.sleep
        self._random = random.random
        self._calls = 0
        self._retries = 0
        self._recovered = 0
        self._gave_up = 0
        self._budget_exhausted = 0

    @property
    def attempts(self) -> int:
        """Total tries allowed (lowered by ``set_retry_testing(True, attempts=n)``)."""
        if TESTING.enabled and TESTING.attempts is not None:
            return min(self._attempts, TESTING.attempts)
        return self._attempts

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)``, again on retryable failures; the last error
        propagates unchanged."""
        self._calls += 1
        deadline = self._begin()
        try:
            first = await fn(*args, **kwargs)
        except Exception as exc:
            if not self._retryable(exc):
                raise
            error: Exception = exc
        else:
            if self._shared is not None:
                self._shared.deposit()
            return first
        attempt = 1
        while True:
            delay = await self._decide(attempt, error, deadline)
            if delay is None:
                raise error
            await self._wait(delay)
            attempt += 1
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if not self._retryable(exc):
                    raise
                error = exc
                continue
            self._recovered += 1
            if self._shared is not None:
                self._shared.deposit()
            return result

    def __aiter__(self) -> _AttemptIterator:
        """``async for attempt in retry: async with attempt: ...`` retries the block."""
        self._calls += 1
        return _AttemptIterator(self)

    # ------------------------------------------------------------------ decisions

    def _begin(self) -> float | None:
        if self._budget is not None:
            self._budget.deposit()
        if self._timeout is None:
            return None
        return self._clock.monotonic() + self._timeout

    async def _decide(self, attempt: int, error: Exception, deadline: float | None) -> float | None:
        """After failed attempt ``attempt``: seconds to wait before the next, or ``None``."""
        if attempt >= self.attempts:
            return self._give_up(attempt, "attempts", error)
        backoff = self._backoff
        delay = backoff.delay(attempt, self._random())
        hint = retry_after_of(error)
        if hint is not None:
            delay = max(delay, min(hint, self._max_hint))
        if TESTING.enabled:
            delay = 0.0
        if deadline is not None and self._clock.monotonic() + delay > deadline:
            return self._give_up(attempt, "timeout", error)
        if self._budget is not None and not self._budget.try_withdraw():
            self._budget_exhausted += 1
            return self._give_up(attempt, "budget", error)
        if self._shared is not None and not await self._shared.try_withdraw():
            self._budget_exhausted += 1
            return self._give_up(attempt, "budget", error)
        self._retries += 1
        log.info(
            "retry_scheduled",
            policy=self.name,
            attempt=attempt,
            delay=round(delay, 4),
            error=repr(error),
        )
        if self._listeners:
            self._dispatch(
                RetryScheduled(self.name, attempt, delay, repr(error), self._clock.time())
            )
        return delay

    def _give_up(self, attempt: int, reason: str, error: Exception) -> float | None:
        self._gave_up += 1
        log.warning(
            "retry_exhausted", policy=self.name, attempts=attempt, reason=reason, error=repr(error)
        )
        if self._listeners:
            self._dispatch(
                RetryExhausted(self.name, attempt, reason, repr(error), self._clock.time())
            )
        return None  # give up: the caller raises the last error

    async def _wait(self, delay: float) -> None:
        if TESTING.enabled:
            await anyio.lowlevel.checkpoint()  # still a cancellation point
        else:
            await self._sleep(delay)

    def stats(self) -> RetryStatistics:
        return RetryStatistics(
            name=self.name,
            calls=self._calls,
            retries=self._retries,
            recovered=self._recovered,
            gave_up=self._gave_up,
            budget_exhausted=self._budget_exhausted,
        )


class Attempt:
    """One try of a block retried with ``async for attempt in Retry(...)``.

    ``async with attempt:`` swallows a retryable error when another try will follow, and lets
    it propagate on the last one (or when the budget or timeout says stop).

    Attributes:
        number: 1 for the first try.
    """

    __slots__ = ("_entered", "_iterator", "number")

    def __init__(self, iterator: _AttemptIterator, number: int) -> None:
        self._iterator = iterator
        self._entered = False
        self.number = number

    async def __aenter__(self) -> Attempt:
        if self._entered:
            raise RuntimeError(f"attempt {self.number} was already used; enter each attempt once")
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._iterator._settle(self.number, exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class _AttemptIterator:
    __slots__ = ("_attempt", "_deadline", "_delay", "_retry", "_state")

    def __init__(self, retry: Retry) -> None:
        self._retry = retry
        self._attempt = 0
        self._state = "start"  # start | running | retry | done
        self._delay = 0.0
        self._deadline: float | None = None

    def __aiter__(self) -> _AttemptIterator:
        return self

    async def __anext__(self) -> Attempt:
        state = self._state
        if state == "start":
            self._deadline = self._retry._begin()
        elif state == "retry":
            await self._retry._wait(self._delay)
        else:
            # "running": the last attempt ended without an error (or was never entered).
            if state == "running":
                if self._attempt > 1:
                    self._retry._recovered += 1
                if self._retry._shared is not None:
                    self._retry._shared.deposit()
            self._state = "done"
            raise StopAsyncIteration
        self._attempt += 1
        self._state = "running"
        return Attempt(self, self._attempt)

    async def _settle(self, number: int, exc: BaseException | None) -> bool:
        if number != self._attempt or self._state != "running":
            raise RuntimeError(f"attempt {number} was already used; enter each attempt once")
        if exc is None:
            return False  # success: __anext__ ends the loop
        retry = self._retry
        if not isinstance(exc, Exception) or not retry._retryable(exc):
            self._state = "done"
            return False
        delay = await retry._decide(number, exc, self._deadline)
        if delay is None:
            self._state = "done"
            return False
        self._delay = delay
        self._state = "retry"
        return True
