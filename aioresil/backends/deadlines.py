"""One timer for every Redis operation in flight on a backend.

Why not ``asyncio.timeout()`` per operation: each one allocates a ``Timeout`` and a
``TimerHandle``, pushes the handle on the event loop's heap and cancels it again, and the
cancelled handles stay in the heap until they reach its top. With 100 tasks calling a strict
breaker that was the largest cost of ours on the call path (issue 17). Every operation of a
backend shares one deadline length (``operation_timeout``), so operations expire in the order
they started: a FIFO queue of in-flight operations and ONE timer armed for its head do the
same work for the price of an append and a flag.

The cut itself is ``asyncio.timeout()``'s: the task is cancelled, and the cancellation this
module caused (and only that one: ``Task.cancelling()`` is compared as the stdlib does) turns
into ``TimeoutError`` at the operation's boundary, so an outer ``cancel()`` or
``asyncio.timeout()`` still wins.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Flight", "SharedDeadline"]

T = TypeVar("T")


class Flight:
    """One operation in flight: when it is due, the task to cut, and whether it was cut."""

    __slots__ = ("cancelling", "due", "expired", "task")

    def __init__(self, due: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.due = due
        self.task: asyncio.Task[object] | None = task
        """``None`` once the operation has finished (then the queue may drop it)."""
        self.cancelling = cancelling
        self.expired = False


class SharedDeadline:
    """Cut operations that run longer than ``timeout`` seconds, with one timer for them all.

    Args:
        timeout: seconds; normally the same for every operation (then in-flight operations
            expire in start order). A different ``timeout`` passed to :meth:`start` still works:
            its operation is placed in due order (a rarer, linear-time path).
    """

    __slots__ = ("_flights", "_loop", "_timer", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._flights: deque[Flight] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Operations in the queue (finished ones are dropped from its head as they finish)."""
        return len(self._flights)

    async def run(self, operation: Callable[[], Awaitable[T]], flight: Flight) -> T:
        """Await ``operation()``; past ``flight.due`` it is cancelled and ``TimeoutError``
        raised (``flight.expired`` then says so). ``flight`` comes from :meth:`start`."""
        try:
            result = await operation()
        except BaseException as exc:
            task = flight.task
            self._finish(flight)
            # As asyncio.timeout(): take back the cancellation we caused; it becomes
            # TimeoutError only if nobody else cancelled the task meanwhile.
            if (
                flight.expired
                and task is not None
                and task.uncancel() <= flight.cancelling
                and isinstance(exc, asyncio.CancelledError)
            ):
                raise TimeoutError from exc
            raise
        task = flight.task
        self._finish(flight)
        if flight.expired and task is not None:
            task.uncancel()  # cut, but the operation swallowed it: the cut is over
        return result

    def start(self, timeout: float | None = None) -> Flight:
        """Register the current task's operation; it is due ``timeout`` (default: the
        deadline's) seconds from now on the event loop's clock."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline can only be used inside a task")
        due = loop.time() + (self.timeout if timeout is None else timeout)
        flight = Flight(due, task, task.cancelling())
        flights = self._flights
        if not flights or flights[-1].due <= due:
            flights.append(flight)
        else:  # a shorter deadline than the last one's: keep the queue in due order
            index = len(flights)
            while index and flights[index - 1].due > due:
                index -= 1
            flights.insert(index, flight)
        if self._timer is None or due < self._timer.when():
            self._arm(loop, due)
        return flight

    def _finish(self, flight: Flight) -> None:
        flight.task = None
        flights = self._flights
        while flights and flights[0].task is None:
            flights.popleft()

    def _arm(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(due, self._expire)

    def _expire(self) -> None:
        """The timer: cut every operation now due, then wait for the next one."""
        self._timer = None
        loop = self._loop
        if loop is None:  # pragma: no cover - the timer belongs to a loop
            return
        now = loop.time()
        flights = self._flights
        while flights:
            flight = flights[0]
            task = flight.task
            if task is None:
                flights.popleft()
                continue
            if flight.due > now:
                break
            flights.popleft()
            flight.expired = True
            task.cancel()
        if flights:
            self._arm(loop, flights[0].due)

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or a new event loop (a test's): what belonged to the old one is void."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flights.clear()
        self._loop = loop
