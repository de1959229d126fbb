"""The in-process backend: the embedded default, so ``pip install aioresil`` and go.

Why no lock object: every operation here is synchronous code with no ``await`` inside, so on
one event loop it runs to completion before any other task can observe the state — the event
loop is the lock, and the hot path pays nothing for it. Do not share one ``MemoryBackend``
between threads running separate event loops; give each loop its own, or use Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ..core import machine
from ..core.config import BreakerConfig
from ..core.machine import BreakerRecord, Outcome, Permit, Rejection, Transition
from ..core.states import Trigger
from ..events import BreakerEvent
from .base import (
    BreakerHandle,
    BreakerReading,
    StorageFactory,
    SuccessRun,
    TransitionCallback,
    close_on_exit,
)

if TYPE_CHECKING:
    from ..clock import Clock
    from .backend_health import BackendHealth

T = TypeVar("T")

__all__ = ["MemoryBackend", "MemoryBreakerHandle"]


class MemoryBreakerHandle:
    """A breaker's state held in this process; every method completes without I/O."""

    __slots__ = ("_callbacks", "config", "hub", "name", "view")

    authoritative = True
    success_run: SuccessRun | None = (
        None  # the view is the state: successes are applied, never counted aside
    )

    def __init__(self, name: str, config: BreakerConfig) -> None:
        self.name = name
        self.config = config
        self.view = BreakerRecord(config)
        self._callbacks: list[TransitionCallback] = []
        self.hub: Any = None  # the breaker layer's per-circuit bookkeeping (see breaker.py)

    def subscribe(self, callback: TransitionCallback) -> None:
        self._callbacks.append(callback)

    def subscribe_events(self, sink: Callable[[BreakerEvent], None]) -> None:
        """Memory never fails over: there are no backend events to deliver."""

    def _emit(self, transition: Transition, now: float) -> None:
        retry_after = (
            max(self.view.open_until - now, 0.0) if transition.new is machine.OPEN else None
        )
        for callback in self._callbacks:
            callback(transition, retry_after)

    def acquire_local(self, now: float) -> Permit | Rejection:
        decision, transition = machine.acquire(self.view, self.config, now)
        if transition is not None:
            self._emit(transition, now)
        return decision

    async def acquire_remote(self, now: float) -> Permit | Rejection:
        return self.acquire_local(now)

    def success_fast(self, generation: int, now: float, duration: float) -> None:
        transition = machine.record_success(self.view, self.config, generation, now, duration)
        if transition is not None:
            self._emit(transition, now)

    def record(self, permit: Permit, outcome: Outcome, now: float, duration: float) -> None:
        transition = machine.record(self.view, self.config, permit, outcome, now, duration)
        if transition is not None:
            self._emit(transition, now)

    async def operator(self, trigger: Trigger, now: float) -> None:
        self._emit(machine.operator(self.view, trigger, now), now)

    async def flush(self) -> None:
        """Nothing is ever held back in memory."""

    async def refresh(self, now: float, wall: float) -> BreakerReading:
        return self.view, now, wall - now


class MemoryBackend:
    """Keeps breakers, checkpoints and dead letters in this process.

    Breakers bound to one ``MemoryBackend`` under the same name share their state, as they
    would through Redis. Stores keep their data in :meth:`namespace` dictionaries.

    Example::

        backend = MemoryBackend()
        a = CircuitBreaker("db", backend=backend)
        b = CircuitBreaker("db", backend=backend)   # same circuit as ``a``
    """

    clock: Clock | None = None
    """Memory stores take "now" from their own clocks: no backend clock."""

    health: BackendHealth | None = None
    """Memory cannot become unreachable: no health state machine."""

    def __init__(self) -> None:
        self._breakers: dict[str, MemoryBreakerHandle] = {}
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._drains: dict[int, Callable[[], Awaitable[None]]] = {}

    def bind_breaker(self, name: str, config: BreakerConfig) -> MemoryBreakerHandle:
        handle = self._breakers.get(name)
        if handle is None:
            handle = self._breakers[name] = MemoryBreakerHandle(name, config)
        elif handle.config != config:
            raise ValueError(
                f"breaker {name!r} is already bound to this backend with a different config; "
                "use one config per name (a BreakerRegistry does this for you)"
            )
        return handle

    async def read_breakers(
        self, handles: Sequence[BreakerHandle], now: float, wall: float
    ) -> list[BreakerReading]:
        """Every handle's record as it is (the view *is* the state): no I/O, no copy."""
        offset = wall - now
        return [(handle.view, now, offset) for handle in handles]

    def namespace(self, kind: str) -> dict[str, Any]:
        """A dictionary shared by every store of ``kind`` on this backend."""
        return self._namespaces.setdefault(kind, {})

    def open_storage(self, factory: StorageFactory[T]) -> T:
        """In-process storage, shared by every store of ``factory.kind`` on this backend."""
        return factory.in_process(self.namespace(factory.kind))

    async def ping(self) -> None:
        """Always reachable."""

    async def check_writable(self) -> None:
        """Always writable."""

    def add_drain(self, owner: object, drain: Callable[[], Awaitable[None]]) -> None:
        """Have :meth:`aclose` await ``drain()`` first, as the Redis backend does."""
        self._drains[id(owner)] = drain

    def discard_drain(self, owner: object) -> None:
        """Withdraw what :meth:`add_drain` registered for ``owner`` (no-op if nothing)."""
        self._drains.pop(id(owner), None)

    async def aclose(self) -> None:
        """Run the registered drains; nothing else to release (one lifecycle for both)."""
        drains, self._drains = list(self._drains.values()), {}
        for drain in drains:
            await drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await close_on_exit(self.aclose, self, exc)  # the block's own exception goes first

    def __repr__(self) -> str:
        return f"MemoryBackend(breakers={len(self._breakers)})"
