"""Awaitables that are done before anyone awaits them: what a breaker's hot ``__aenter__`` and
``__aexit__`` return instead of a coroutine.

Why: ``async with breaker:`` awaits whatever ``__aenter__`` and ``__aexit__`` return. An
``async def`` makes a coroutine object on each call and runs it to its first ``return``:
about 60 ns of a guarded call whose whole budget (issue 17: 1.3x a bare ``async with`` of
about 300 ns) is 90 ns. The hot paths decide everything without awaiting, so they return a
:class:`Ready` instead, one the breaker keeps (from its second call: see
``CircuitBreaker._entered_later`` for why not from the first), and only the paths that really
await (a Redis round trip, a recorded outcome) return a coroutine.

Why an ``asyncio.Future`` subclass: awaiting a done C future costs one small iterator, with no
Python frame at all. Two things make it safe to hand out everywhere:

* It is bound to no event loop (:data:`_NO_LOOP` only answers ``get_debug``, all that
  ``Future.__init__`` asks): a done future never calls its loop when awaited, so one ready
  value serves every loop and thread (``asyncio.run`` twice, trio through anyio).
* It tells asyncio it is *not* a future (``_asyncio_future_blocking`` is ``None``, what
  ``asyncio.isfuture`` checks), so ``wait_for``, ``gather``, ``shield`` and ``ensure_future``
  wrap it like any other awaitable instead of scheduling callbacks on its (absent) loop.
  ``asyncio.create_task`` refuses it, as it refuses every awaitable that is not a coroutine:
  ``__aenter__`` is typed ``Awaitable``, not ``Coroutine``.

Code that takes it for what it is all the same (``isinstance(x, asyncio.Future)``) and asks for
its loop or a done callback gets the running loop's: a done future would call the callback
soon on its own loop, and this one has none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Context
from typing import Any, Generic, Self, TypeVar

__all__ = ["DONE", "Ready"]

T = TypeVar("T")


class _NoLoop:
    """The loop a :class:`Ready` is bound to: none (see the module notes)."""

    __slots__ = ()

    def get_debug(self) -> bool:
        return False


_NO_LOOP: Any = _NoLoop()


class Ready(asyncio.Future[T], Generic[T]):
    """An awaitable already holding ``value``: ``await ready`` gives ``value`` at once, as
    often as it is awaited, in any event loop."""

    __slots__ = ()

    _asyncio_future_blocking = None  # type: ignore[assignment]  # not a future to asyncio

    def __init__(self, value: T) -> None:
        super().__init__(loop=_NO_LOOP)
        self.set_result(value)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (a ready value belongs to none)."""
        return asyncio.get_running_loop()

    def add_done_callback(
        self, fn: Callable[[Self], object], *, context: Context | None = None
    ) -> None:
        """Call ``fn(self)`` soon on the running loop, as a done future calls it on its own."""
        asyncio.get_running_loop().call_soon(fn, self, context=context)

    def remove_done_callback(self, fn: Callable[[Self], object]) -> int:
        """0: a callback is called soon after it is added, never kept."""
        return 0


DONE: Ready[None] = Ready(None)
"""What a finished ``__aexit__`` returns: ``None`` (the exception, if any, propagates)."""
