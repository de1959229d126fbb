"""What a breaker needs from a backend: a handle offering atomic operations, never get/set.

A breaker binds once (``backend.bind_breaker(name, config)``) and then talks to its
:class:`BreakerHandle`. Each operation is atomic on its own (under the event loop for memory,
one Lua script for Redis). The ``*_local`` methods answer without I/O when they can and return
``None`` when the backend must be asked; the breaker then awaits the ``*_remote`` twin. That
split keeps the memory backend's hot path free of extra coroutine frames.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from ..core.config import BreakerConfig
from ..core.machine import BreakerRecord, Outcome, Permit, Rejection, Transition
from ..core.states import Trigger
from ..events import BreakerEvent

__all__ = ["BreakerBackend", "BreakerHandle", "TransitionCallback"]

TransitionCallback = Callable[[Transition, float | None], None]
"""Called with each transition and the new OPEN state's retry_after (seconds) or None."""


@runtime_checkable
class BreakerHandle(Protocol):
    """One breaker's state in a backend."""

    view: BreakerRecord
    """The local view: ``state`` and ``generation`` are readable without I/O. For the memory
    backend it *is* the state; for Redis it is kept fresh by script replies and pub/sub.
    Breakers keep a reference to it, so a handle updates it in place and never replaces it.
    While ``view.state`` is CLOSED or DISABLED the breaker grants ``Permit(view.generation)``
    without asking the handle."""

    authoritative: bool
    """True when ``view`` is the state itself (memory): the breaker may then apply an untimed
    success to it inline, which is the hot path's largest saving."""

    hub: Any
    """Kept for the breaker layer (``breaker._Circuit``: what every ``CircuitBreaker`` of this
    circuit shares, with the handle's one subscription); ``None`` until the first breaker
    binds. Backends only hold it, so it lives exactly as long as the handle."""

    def subscribe(self, callback: TransitionCallback) -> None:
        """Be told about transitions this handle observes."""
        ...

    def subscribe_events(self, sink: Callable[[BreakerEvent], None]) -> None:
        """Be told about backend events (failover, recovery) of this handle."""
        ...

    def acquire_local(self, now: float) -> Permit | Rejection | None:
        """A permit or rejection decided locally, or ``None`` to ask :meth:`acquire_remote`."""
        ...

    async def acquire_remote(self, now: float) -> Permit | Rejection:
        """A permit or rejection decided by the shared store."""
        ...

    def success_fast(self, generation: int, now: float, duration: float) -> Awaitable[None] | None:
        """Record the success of a normal (non-trial) permit; an awaitable if I/O is needed."""
        ...

    def record(
        self, permit: Permit, outcome: Outcome, now: float, duration: float
    ) -> Awaitable[None] | None:
        """Record how a permitted call ended; an awaitable if I/O is needed."""
        ...

    async def operator(self, trigger: Trigger, now: float) -> None:
        """Reset, force open or disable (one atomic operation)."""
        ...

    async def refresh(self, now: float, wall: float) -> tuple[BreakerRecord, float, float]:
        """A fresh copy of the full state for statistics: ``(record, record_now, wall_offset)``.

        ``record_now`` is "now" in the record's own time base (monotonic for memory, Redis
        ``TIME`` for Redis) and ``wall = t + wall_offset`` turns its timestamps into Unix time.
        """
        ...


@runtime_checkable
class BreakerBackend(Protocol):
    """Anything breakers can keep their state in."""

    def bind_breaker(self, name: str, config: BreakerConfig) -> BreakerHandle:
        """The handle of breaker ``name``; the same name on one backend shares state."""
        ...
