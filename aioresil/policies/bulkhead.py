"""Bulkhead: at most ``max_concurrent`` calls at once, in this process or across the fleet.

Why a bulkhead: a slow dependency otherwise soaks up every task and connection of the caller,
and the failure spreads. Calls beyond the limit are rejected at once with
:class:`~aioresil.BulkheadFullError` (``max_waiting=0``, the default) or queue, at most
``max_waiting`` of them, for at most ``max_wait`` seconds, first come first served.

On a ``RedisBackend`` the limit is fleet-wide: a Redis semaphore whose slots are *leases* (a
ZSET of lease ids scored by their deadline on Redis ``TIME``), one script per acquire and one
per release. A process that dies holding a slot loses it after ``lease`` seconds, reclaimed
inside the acquire script. Keep ``lease`` longer than your slowest call (put a
:class:`Timeout` inside the bulkhead): a call that outlives its lease no longer counts. Fleet
waiters poll every ``poll_interval`` seconds; ``max_waiting`` then bounds this process's
waiters. A Redis error while acquiring propagates (``BackendUnavailableError``): the call does
not run without a slot. A release that fails (Redis down) is logged; the lease then expires.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn, ParamSpec, Self, TypeVar

import anyio

from ..backends.scripts import load_script
from ..clock import Clock
from ..exceptions import AioresilError, BulkheadFullError
from .base import ContextStack, PolicyBase, Statistics, check_seconds, log, script_backend
from .events import BulkheadRejected

__all__ = ["Bulkhead", "BulkheadStatistics"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BulkheadStatistics(Statistics):
    """A bulkhead at one moment, as this process sees it.

    ``active`` and ``waiting`` are this process's calls (fleet-wide totals live in Redis);
    ``accepted`` and ``rejected`` count since creation.
    """

    name: str
    max_concurrent: int
    fleet_wide: bool
    active: int
    waiting: int
    accepted: int
    rejected: int


class Bulkhead(PolicyBase):
    """Limit how many calls run at once.

    Args:
        max_concurrent: calls allowed at once (>= 1); across the fleet on a ``RedisBackend``.
        max_waiting: calls that may queue for a slot (0: reject at once when full).
        max_wait: seconds a queued call waits before it is rejected (``None``: no limit).
        name: for logs, events, statistics, and the Redis key (shared by the fleet).
        backend: ``None``/``MemoryBackend`` (this process) or a ``RedisBackend`` (fleet).
        lease: seconds a fleet slot is held at most (a crashed holder frees it then).
        poll_interval: seconds between fleet acquire attempts of a queued call.
        clock: labels events.

    Example::

        bulkhead = Bulkhead(10, max_waiting=100, max_wait=2.0)

        async with bulkhead:               # BulkheadFullError when 10 run and 100 wait
            await report_service.render()
    """

    __slots__ = (
        "_accepted",
        "_active",
        "_backend",
        "_key",
        "_lease_ms",
        "_leases",
        "_rejected",
        "_waiters",
        "_waiting_fleet",
        "max_concurrent",
        "max_wait",
        "max_waiting",
        "poll_interval",
    )

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = 0,
        max_wait: float | None = None,
        name: str = "bulkhead",
        backend: object = None,
        lease: float = 60.0,
        poll_interval: float = 0.05,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, clock)
        for what, value, low in (
            ("max_concurrent", max_concurrent, 1),
            ("max_waiting", max_waiting, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{what} must be an int >= {low}, got {value!r}")
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.max_wait = None if max_wait is None else check_seconds("max_wait", max_wait)
        self.poll_interval = check_seconds("poll_interval", poll_interval)
        self._backend = script_backend(backend, f"Bulkhead {name!r}")
        self._key = "" if self._backend is None else self._backend.key("bulkhead", name, "leases")
        self._lease_ms = max(int(check_seconds("lease", lease) * 1000), 1)
        self._active = 0
        self._waiters: deque[anyio.Event] = deque()
        self._waiting_fleet = 0
        self._accepted = 0
        self._rejected = 0
        self._leases: ContextStack[str | None] = ContextStack(f"aioresil.bulkhead.{name}")

    @property
    def fleet_wide(self) -> bool:
        return self._backend is not None

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` in a slot; ``BulkheadFullError`` when none is
        free (after queueing, when allowed)."""
        if self._backend is None:
            # In-process fast path: a free slot and nobody queued before us.
            if self._active < self.max_concurrent and not self._waiters:
                self._active += 1
                self._accepted += 1
            else:
                await self._wait_local()
            try:
                return await fn(*args, **kwargs)
            finally:
                self._release_local()
        lease = await self._acquire_fleet()
        try:
            return await fn(*args, **kwargs)
        finally:
            await self._release_fleet(lease)

    async def __aenter__(self) -> Self:
        lease: str | None = None
        if self._backend is None:
            if self._active < self.max_concurrent and not self._waiters:
                self._active += 1
                self._accepted += 1
            else:
                await self._wait_local()
        else:
            lease = await self._acquire_fleet()
        self._leases.push(lease)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._leases.pop(self)
        if lease is None:
            self._release_local()
        else:
            await self._release_fleet(lease)

    # ------------------------------------------------------------------ in-process

    async def _wait_local(self) -> None:
        if len(self._waiters) >= self.max_waiting:
            self._reject(None)
        event = anyio.Event()
        self._waiters.append(event)
        try:
            if self.max_wait is None:
                await event.wait()
            else:
                with anyio.move_on_after(self.max_wait):
                    await event.wait()
        except BaseException:
            self._abandon(event)
            raise
        if not event.is_set():
            self._abandon(event)
            self._reject(None)
        self._accepted += 1  # the releaser handed its slot over: _active already counts us

    def _abandon(self, event: anyio.Event) -> None:
        if event.is_set():
            self._release_local()  # the slot was handed to us as we left: pass it on
        else:
            self._waiters.remove(event)

    def _release_local(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # hand the slot over; _active stays the same
        else:
            self._active -= 1

    # ------------------------------------------------------------------ fleet-wide

    async def _acquire_fleet(self) -> str:
        lease = uuid.uuid4().hex
        backend = self._backend
        assert backend is not None
        script = load_script("bulkhead_acquire")
        args = (lease, self.max_concurrent, self._lease_ms)
        granted, _, *rest = await backend.run_script(script, (self._key,), args)
        if granted:
            self._active += 1
            self._accepted += 1
            return lease
        retry_after = int(rest[0]) / 1000
        if self._waiting_fleet >= self.max_waiting:
            self._reject(retry_after)
        self._waiting_fleet += 1
        try:
            with anyio.move_on_after(self.max_wait if self.max_wait is not None else float("inf")):
                while True:
                    await anyio.sleep(self.poll_interval)
                    granted, _, *rest = await backend.run_script(script, (self._key,), args)
                    if granted:
                        self._active += 1
                        self._accepted += 1
                        return lease
                    retry_after = int(rest[0]) / 1000
        finally:
            self._waiting_fleet -= 1
        return self._reject(retry_after)

    async def _release_fleet(self, lease: str) -> None:
        self._active -= 1
        backend = self._backend
        assert backend is not None
        # Shielded: a cancelled caller must still give its slot back (trio and anyio cancel
        # every await inside a cancelled scope, so without the shield the release never ran).
        with anyio.CancelScope(shield=True):
            try:
                held = await backend.run_script(
                    load_script("bulkhead_release"), (self._key,), (lease,)
                )
            except AioresilError as error:
                log.warning("bulkhead_release_failed", policy=self.name, error=str(error))
                return
        if not held:
            log.warning("bulkhead_lease_expired", policy=self.name, lease_ms=self._lease_ms)

    # ------------------------------------------------------------------ shared

    def _reject(self, retry_after: float | None) -> NoReturn:
        self._rejected += 1
        fleet = self._backend is not None
        log.warning(
            "bulkhead_rejected", policy=self.name, max_concurrent=self.max_concurrent, fleet=fleet
        )
        if self._listeners:
            self._dispatch(
                BulkheadRejected(self.name, self.max_concurrent, fleet, self._clock.time())
            )
        raise BulkheadFullError(self.name, self.max_concurrent, retry_after)

    def stats(self) -> BulkheadStatistics:
        return BulkheadStatistics(
            name=self.name,
            max_concurrent=self.max_concurrent,
            fleet_wide=self._backend is not None,
            active=self._active,
            waiting=len(self._waiters) + self._waiting_fleet,
            accepted=self._accepted,
            rejected=self._rejected,
        )

    def __repr__(self) -> str:
        where = "fleet" if self._backend is not None else "local"
        return f"<Bulkhead {self.name!r} {self._active}/{self.max_concurrent} {where}>"
