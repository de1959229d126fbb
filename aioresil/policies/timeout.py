"""Timeout: cancel the guarded call when its time runs out, then raise ``CallTimeoutError``.

Why anyio cancel scopes: the guarded call is really cancelled (its ``finally`` blocks run, the
connection it held is released), on asyncio and trio alike, and a cancellation coming from
*outside* (the caller's own deadline) is never mistaken for our timeout: only the scope whose
deadline expired turns into :class:`~aioresil.CallTimeoutError`; anything else propagates.

Where to put it in a pipeline: outside a :class:`Retry` it bounds the whole call, waits
included; inside it bounds each attempt (and a ``CallTimeoutError`` is then retryable).

With ``adaptive=AdaptiveTimeout(...)`` the deadline follows recent successful durations
(a percentile times a factor, between a floor and a ceiling), learnt from a sketch the whole
fleet can share through Redis; see :mod:`aioresil.policies.adaptive`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import anyio

from ..clock import Clock
from ..exceptions import CallTimeoutError
from .adaptive import AdaptiveTimeout, Flight, LatencySketch
from .base import ContextStack, PolicyBase, Statistics, check_seconds, log
from .events import CallTimedOut

__all__ = ["Timeout", "TimeoutStatistics"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TimeoutStatistics(Statistics):
    """A timeout's counters: ``calls`` that started, how many of them ``timed_out``.

    ``deadline`` is the limit a call starting now gets (``seconds`` unless adaptive) and
    ``samples`` the durations an adaptive timeout's sketch holds (0 otherwise); ``saved`` the
    calls that answered after their learnt deadline because no witness allowed the cut.
    """

    name: str
    seconds: float
    calls: int
    timed_out: int
    deadline: float = 0.0
    samples: int = 0
    saved: int = 0


class Timeout(PolicyBase):
    """Limit a call (or an ``async with`` block) to ``seconds``.

    Args:
        seconds: the limit (> 0), measured on the event loop's clock (``anyio.current_time``).
        name: for logs, events, statistics and the error message.
        adaptive: learn the deadline from recent successful durations
            (:class:`AdaptiveTimeout`); ``seconds`` is then the cold-start default and,
            unless the adaptive ``ceiling`` says otherwise, the longest deadline.
        clock: only labels events (``at``) and times the adaptive sketch's syncs; the
            deadline is the event loop's.

    Example::

        async with Timeout(2.0):
            await upstream.get()          # cancelled after 2 s -> CallTimeoutError

        @Timeout(0.5)
        async def lookup(key: str) -> str: ...
    """

    __slots__ = ("_calls", "_scopes", "_sketch", "_timed_out", "seconds")

    def __init__(
        self,
        seconds: float,
        *,
        name: str = "timeout",
        adaptive: AdaptiveTimeout | None = None,
        clock: Clock | None = None,
    ):
        super().__init__(name, clock)
        self.seconds = check_seconds("seconds", seconds)
        if adaptive is not None and not isinstance(adaptive, AdaptiveTimeout):
            raise TypeError(f"adaptive must be an AdaptiveTimeout, got {adaptive!r}")
        self._sketch = (
            None if adaptive is None else LatencySketch(adaptive, name, self.seconds, clock)
        )
        # One Timeout serves many tasks and may nest in itself: each ``async with`` pushes its
        # scope (and its limit and start) on a per-context stack (a child task copies the
        # context, never pops a parent's).
        self._scopes: ContextStack[tuple[anyio.CancelScope, float, Flight | None]] = ContextStack(
            f"aioresil.timeout.{name}"
        )
        self._calls = 0
        self._timed_out = 0

    @property
    def deadline(self) -> float:
        """The limit (seconds) a call starting now gets."""
        return self.seconds if self._sketch is None else self._sketch.deadline()

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)``; cancel it and raise ``CallTimeoutError`` when
        it takes longer than the deadline."""
        self._calls += 1
        sketch = self._sketch
        if sketch is None:
            with anyio.move_on_after(self.seconds):
                return await fn(*args, **kwargs)
            # Only reached when our own deadline cancelled the call.
            raise self._expired(self.seconds)
        await sketch.load()
        limit = sketch.deadline()
        started = anyio.current_time()
        scope = anyio.CancelScope()
        flight = sketch.begin(scope, started, limit)  # sets the scope's deadline
        try:
            with scope:
                result = await fn(*args, **kwargs)
                sketch.succeeded(flight, anyio.current_time() - started)
                return result
        finally:
            sketch.end(flight)
        # Only reached when our own deadline (maybe held for a witness) cancelled the call.
        sketch.timed_out()
        raise self._expired(scope.deadline - started)

    async def __aenter__(self) -> Self:
        self._calls += 1
        sketch = self._sketch
        if sketch is not None:
            await sketch.load()
            limit = sketch.deadline()
        else:
            limit = self.seconds
        now = anyio.current_time()
        scope = anyio.CancelScope(deadline=now + limit)
        flight = None if sketch is None else sketch.begin(scope, now, limit)
        scope.__enter__()
        self._scopes.push((scope, now, flight))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope, started, flight = self._scopes.pop(self)
        sketch = self._sketch
        try:
            swallowed = scope.__exit__(exc_type, exc, tb)
        except BaseException:
            # The scope refused to exit (anyio raises when it is left from another task):
            # the call is over all the same, and a flight never ended would keep the
            # sketch's in-flight count (and its queue of calls vouched for) up for good.
            if sketch is not None and flight is not None:
                sketch.end(flight)
            raise
        if swallowed and scope.cancelled_caught:
            if sketch is not None and flight is not None:
                sketch.end(flight)
                sketch.timed_out()
            raise self._expired(scope.deadline - started) from None
        if sketch is not None and flight is not None:
            if exc_type is None:
                sketch.succeeded(flight, anyio.current_time() - started)
            else:
                sketch.end(flight)

    def _expired(self, limit: float) -> CallTimeoutError:
        self._timed_out += 1
        log.warning("call_timed_out", policy=self.name, seconds=limit)
        if self._listeners:
            self._dispatch(CallTimedOut(self.name, limit, self._clock.time()))
        return CallTimeoutError(self.name, limit)

    def stats(self) -> TimeoutStatistics:
        sketch = self._sketch
        return TimeoutStatistics(
            name=self.name,
            seconds=self.seconds,
            calls=self._calls,
            timed_out=self._timed_out,
            deadline=self.deadline,
            samples=0 if sketch is None else sketch.samples,
            saved=0 if sketch is None else sketch.saved,
        )

    def __repr__(self) -> str:
        return f"<Timeout {self.name!r} {self.seconds:g}s>"
