"""Helpers for testing code that uses aioresil: a fake clock, an event recorder, a faulty backend.

Example::

    clock = FakeClock()
    breaker = CircuitBreaker("x", config=BreakerConfig(recovery_timeout=5), clock=clock)
    ...
    clock.advance(5)      # no real sleeping
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Iterator, Sequence
from typing import TypeVar

from .backends.base import BreakerHandle, BreakerReading
from .backends.memory import MemoryBackend, MemoryBreakerHandle
from .core.config import BreakerConfig
from .core.machine import BreakerRecord, Outcome, Permit, Rejection
from .core.states import Trigger
from .events import BreakerEvent
from .exceptions import BackendUnavailableError

__all__ = ["EventRecorder", "FakeClock", "FaultyBackend"]

E = TypeVar("E")


class FakeClock:
    """A clock that moves only when told to. Implements :class:`aioresil.Clock`.

    Args:
        start: initial monotonic reading.
        wall_start: initial wall-clock reading (Unix seconds).
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._mono = float(start)
        self._offset = float(wall_start) - float(start)

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._mono + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward (never backwards: a monotonic clock cannot)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds})")
        self._mono += seconds

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._mono})"


class EventRecorder:
    """A listener that keeps every event; ``of_type(StateChanged)`` filters them.

    Example::

        events = EventRecorder()
        breaker.add_listener(events)
        ...
        assert [e.new for e in events.of_type(StateChanged)] == [CircuitState.OPEN]
    """

    def __init__(self) -> None:
        self.events: list[BreakerEvent] = []

    def __call__(self, event: BreakerEvent) -> None:
        self.events.append(event)

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        self.events.clear()


class _FaultyHandle(MemoryBreakerHandle):
    __slots__ = ("_owner",)

    def __init__(self, name: str, config: BreakerConfig, owner: FaultyBackend) -> None:
        super().__init__(name, config)
        self._owner = owner

    def _check(self) -> None:
        if self._owner.failing:
            raise BackendUnavailableError("injected fault: backend unavailable")

    def acquire_local(self, now: float) -> None:  # type: ignore[override]
        return None  # always "ask the backend", so faults can be injected there

    async def acquire_remote(self, now: float) -> Permit | Rejection:
        self._check()
        return super().acquire_local(now)

    authoritative = False

    def success_fast(  # type: ignore[override]
        self, generation: int, now: float, duration: float
    ) -> Awaitable[None]:
        return self._record(Permit(generation), Outcome.SUCCESS, now, duration)

    def record(  # type: ignore[override]
        self, permit: Permit, outcome: Outcome, now: float, duration: float
    ) -> Awaitable[None]:
        return self._record(permit, outcome, now, duration)

    async def _record(self, permit: Permit, outcome: Outcome, now: float, duration: float) -> None:
        self._check()
        super().record(permit, outcome, now, duration)

    async def operator(self, trigger: Trigger, now: float) -> None:
        self._check()
        await super().operator(trigger, now)

    async def refresh(self, now: float, wall: float) -> tuple[BreakerRecord, float, float]:
        self._check()
        return await super().refresh(now, wall)


class FaultyBackend(MemoryBackend):
    """A memory backend whose operations fail while ``failing`` is true.

    Every breaker operation goes through the "remote" path, so tests can check how code
    behaves when storage is down (``backend.failing = True``) and when it returns.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def bind_breaker(self, name: str, config: BreakerConfig) -> MemoryBreakerHandle:
        handle = self._breakers.get(name)
        if handle is None:
            handle = self._breakers[name] = _FaultyHandle(name, config, self)
        return handle

    async def ping(self) -> None:
        if self.failing:
            raise BackendUnavailableError("injected fault: backend unavailable")

    async def read_breakers(
        self, handles: Sequence[BreakerHandle], now: float, wall: float
    ) -> list[BreakerReading]:
        if self.failing:
            raise BackendUnavailableError("injected fault: backend unavailable")
        return await super().read_breakers(handles, now, wall)


# ---------------------------------------------------------------------- retries in tests


def set_retry_testing(enabled: bool, *, attempts: int | None = None) -> None:
    """Make every :class:`~aioresil.Retry` wait zero seconds (and try at most ``attempts``
    times) while ``enabled``, so users' test suites never sleep through backoffs.

    Like stamina's ``set_testing``; process-wide. Prefer :func:`retry_testing` in tests.
    Retries still yield to the event loop between attempts (cancellation still works).
    """
    from .policies.retry import TESTING

    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
    ):
        raise ValueError(f"attempts must be an int >= 1 or None, got {attempts!r}")
    TESTING.enabled = bool(enabled)
    TESTING.attempts = attempts if enabled else None


@contextlib.contextmanager
def retry_testing(*, attempts: int | None = None) -> Iterator[None]:
    """Zero-wait retries inside the block, the previous setting restored after it.

    Example::

        with retry_testing(attempts=2):
            with pytest.raises(OSError):
                await fetch()        # tried twice, no sleeping
    """
    from .policies.retry import TESTING

    previous = (TESTING.enabled, TESTING.attempts)
    set_retry_testing(True, attempts=attempts)
    try:
        yield
    finally:
        TESTING.enabled, TESTING.attempts = previous


__all__ += ["retry_testing", "set_retry_testing"]
