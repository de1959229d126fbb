"""Timeout: cancel the guarded call when its time runs out, then raise ``CallTimeoutError``.

Why anyio cancel scopes: the guarded call is really cancelled (its ``finally`` blocks run, the
connection it held is released), on asyncio and trio alike, and a cancellation coming from
*outside* (the caller's own deadline) is never mistaken for our timeout: only the scope whose
deadline expired turns into :class:`~aioresil.CallTimeoutError`; anything else propagates.

Where to put it in a pipeline: outside a :class:`Retry` it bounds the whole call, waits
included; inside it bounds each attempt (and a ``CallTimeoutError`` is then retryable).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import anyio

from ..clock import Clock
from ..exceptions import CallTimeoutError
from .base import ContextStack, PolicyBase, Statistics, check_seconds, log
from .events import CallTimedOut

__all__ = ["Timeout", "TimeoutStatistics"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TimeoutStatistics(Statistics):
    """A timeout's counters: ``calls`` that started, how many of them ``timed_out``."""

    name: str
    seconds: float
    calls: int
    timed_out: int


class Timeout(PolicyBase):
    """Limit a call (or an ``async with`` block) to ``seconds``.

    Args:
        seconds: the limit (> 0), measured on the event loop's clock (``anyio.current_time``).
        name: for logs, events, statistics and the error message.
        clock: only labels events (``at``); the deadline is the event loop's.

    Example::

        async with Timeout(2.0):
            await upstream.get()          # cancelled after 2 s -> CallTimeoutError

        @Timeout(0.5)
        async def lookup(key: str) -> str: ...
    """

    __slots__ = ("_calls", "_scopes", "_timed_out", "seconds")

    def __init__(self, seconds: float, *, name: str = "timeout", clock: Clock | None = None):
        super().__init__(name, clock)
        self.seconds = check_seconds("seconds", seconds)
        # One Timeout serves many tasks and may nest in itself: each ``async with`` pushes its
        # scope on a per-context stack (a child task copies the context, never pops a parent's).
        self._scopes: ContextStack[anyio.CancelScope] = ContextStack(f"aioresil.timeout.{name}")
        self._calls = 0
        self._timed_out = 0

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)``; cancel it and raise ``CallTimeoutError`` when
        it takes longer than ``seconds``."""
        self._calls += 1
        with anyio.move_on_after(self.seconds) as scope:
            return await fn(*args, **kwargs)
        # Only reached when our own deadline cancelled the call.
        raise self._expired(scope)

    async def __aenter__(self) -> Self:
        self._calls += 1
        scope = anyio.CancelScope(deadline=anyio.current_time() + self.seconds)
        scope.__enter__()
        self._scopes.push(scope)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._scopes.pop(self)
        if scope.__exit__(exc_type, exc, tb) and scope.cancelled_caught:
            raise self._expired(scope) from None

    def _expired(self, scope: anyio.CancelScope) -> CallTimeoutError:
        self._timed_out += 1
        log.warning("call_timed_out", policy=self.name, seconds=self.seconds)
        if self._listeners:
            self._dispatch(CallTimedOut(self.name, self.seconds, self._clock.time()))
        return CallTimeoutError(self.name, self.seconds)

    def stats(self) -> TimeoutStatistics:
        return TimeoutStatistics(
            name=self.name, seconds=self.seconds, calls=self._calls, timed_out=self._timed_out
        )

    def __repr__(self) -> str:
        return f"<Timeout {self.name!r} {self.seconds:g}s>"
