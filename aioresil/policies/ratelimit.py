"""RateLimiter: a token bucket, in this process or shared by the fleet through Redis.

Why a token bucket: it allows ``burst`` calls at once after a quiet spell, then ``rate`` calls
per ``per`` seconds on average, which is what most upstream quotas say. A call without a
token raises :class:`~aioresil.RateLimitExceededError` carrying ``retry_after`` (a
:class:`Retry` around the limiter waits exactly that long), or, with ``max_wait``, waits for
its token when it will come within that time.

On a ``RedisBackend`` the bucket is fleet-wide: one Lua script refills, checks and takes, on
Redis ``TIME``, so the whole fleet shares one quota however skewed its clocks are.
In process, a waiting call *reserves* its token (the balance goes below zero), so concurrent
waiters are served in order and never exceed the rate; a waiter cancelled while it waits does
not give its token back (the limiter errs on the side of fewer calls).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, ParamSpec, Self, TypeVar

import anyio

from ..backends.scripts import load_script
from ..clock import Clock
from ..exceptions import RateLimitExceededError
from .base import PolicyBase, Statistics, check_seconds, log, script_backend
from .events import RateLimited

__all__ = ["RateLimiter", "RateLimiterStatistics"]

P = ParamSpec("P")
R = TypeVar("R")

Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics(Statistics):
    """A limiter's counters in this process: calls ``allowed`` (``waited`` of them after
    waiting for their token) and ``limited`` (refused)."""

    name: str
    rate: float
    per: float
    burst: float
    fleet_wide: bool
    allowed: int
    waited: int
    limited: int


class RateLimiter(PolicyBase):
    """At most ``rate`` calls per ``per`` seconds, with bursts of up to ``burst``.

    Args:
        rate: calls allowed per ``per`` seconds (> 0).
        per: the period, in seconds.
        burst: tokens the bucket holds (calls allowed at once after a quiet spell);
            ``max(1, rate)`` by default.
        max_wait: seconds a call may wait for its token (0: refuse at once).
        name: for logs, events, statistics, and the Redis key (shared by the fleet).
        backend: ``None``/``MemoryBackend`` (this process) or a ``RedisBackend`` (fleet).
        clock: the in-process bucket's time source (``FakeClock`` in tests).
        sleep: ``async sleep(seconds)`` used when waiting; ``anyio.sleep`` by default.

    Example::

        github = RateLimiter(5000, per=3600, backend=redis_backend, name="github")

        async with github:                   # RateLimitExceededError(retry_after=...) when empty
            await client.get("/repos")
    """

    __slots__ = (
        "_allowed",
        "_backend",
        "_key",
        "_last",
        "_limited",
        "_refill",
        "_sleep",
        "_tokens",
        "_waited",
        "burst",
        "max_wait",
        "per",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        max_wait: float = 0.0,
        name: str = "ratelimit",
        backend: object = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        super().__init__(name, clock)
        self.rate = check_seconds("rate", rate)
        self.per = check_seconds("per", per)
        self.burst = max(1.0, self.rate) if burst is None else check_seconds("burst", burst)
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1 (one call), got {burst!r}")
        self.max_wait = check_seconds("max_wait", max_wait, allow_zero=True)
        if sleep is not None and not callable(sleep):
            raise TypeError(f"sleep must be an async callable, got {sleep!r}")
        self._sleep: Sleep = sleep if sleep is not None else anyio.sleep
        self._refill = self.rate / self.per  # tokens per second
        self._backend = script_backend(backend, f"RateLimiter {name!r}")
        self._key = "" if self._backend is None else self._backend.key("ratelimit", name, "bucket")
        self._tokens = self.burst
        self._last = self._clock.monotonic()
        self._allowed = 0
        self._waited = 0
        self._limited = 0

    @property
    def fleet_wide(self) -> bool:
        return self._backend is not None

    async def acquire(self) -> None:
        """Take one token, waiting up to ``max_wait``; else raise ``RateLimitExceededError``."""
        if self._backend is not None:
            await self._acquire_fleet()
            return
        now = self._clock.monotonic()
        tokens = min(self.burst, self._tokens + (now - self._last) * self._refill)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            self._allowed += 1
            return
        wait = (1.0 - tokens) / self._refill
        if wait > self.max_wait:
            self._tokens = tokens
            self._limit(wait)
        self._tokens = tokens - 1.0  # reserved: the next caller queues behind us
        try:
            await self._sleep(wait)
        except BaseException:
            # Cancelled while waiting: give the reserved token back (it was never used).
            self._tokens += 1.0
            raise
        self._allowed += 1
        self._waited += 1

    async def _acquire_fleet(self) -> None:
        backend = self._backend
        assert backend is not None
        script = load_script("ratelimit_acquire")
        args = (repr(self.burst), repr(self._refill), 1)
        deadline: float | None = None
        waited = False
        while True:
            granted, wait_us = await backend.run_script(script, (self._key,), args)
            if granted:
                self._allowed += 1
                self._waited += waited
                return
            wait = int(wait_us) / 1_000_000
            now = anyio.current_time()
            if deadline is None:
                deadline = now + self.max_wait
            if now + wait > deadline:
                self._limit(wait)
            waited = True
            await self._sleep(wait)

    def _limit(self, retry_after: float) -> NoReturn:
        self._limited += 1
        fleet = self._backend is not None
        retry_after = math.ceil(retry_after * 1e6) / 1e6
        log.info("rate_limited", policy=self.name, retry_after=round(retry_after, 4), fleet=fleet)
        if self._listeners:
            self._dispatch(RateLimited(self.name, retry_after, fleet, self._clock.time()))
        raise RateLimitExceededError(self.name, retry_after)

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Take a token, then run ``await fn(*args, **kwargs)``."""
        await self.acquire()
        return await fn(*args, **kwargs)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None  # a token is spent when the call starts; nothing to give back

    def stats(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            name=self.name,
            rate=self.rate,
            per=self.per,
            burst=self.burst,
            fleet_wide=self._backend is not None,
            allowed=self._allowed,
            waited=self._waited,
            limited=self._limited,
        )

    def __repr__(self) -> str:
        return f"<RateLimiter {self.name!r} {self.rate:g}/{self.per:g}s burst {self.burst:g}>"
