"""What a breaker needs from a backend: a handle offering atomic operations, never get/set.

A breaker binds once (``backend.bind_breaker(name, config)``) and then talks to its
:class:`BreakerHandle`. Each operation is atomic on its own (under the event loop for memory,
one Lua script for Redis). The ``*_local`` methods answer without I/O when they can and return
``None`` when the backend must be asked; the breaker then awaits the ``*_remote`` twin. That
split keeps the memory backend's hot path free of extra coroutine frames.

Everything the layers above need from a backend is a method here (ARCHITECTURE.md): the
registry reads many breakers with :meth:`BreakerBackend.read_breakers`, stores and policies get
their storage through :meth:`BreakerBackend.open_storage` (a double dispatch, so nothing above
asks ``isinstance(backend, MemoryBackend)``), health checks call ``ping()``. Both backends and
``aioresil.testing``'s fakes implement all of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar, runtime_checkable

from .._log import get_logger
from ..clock import Clock
from ..core.config import BreakerConfig
from ..core.machine import BreakerRecord, Outcome, Permit, Rejection, Transition
from ..core.states import Trigger
from ..events import BreakerEvent

if TYPE_CHECKING:  # scripts.py loads importlib.resources: not on the `import aioresil` path
    from .backend_health import BackendHealth
    from .scripts import LuaScript

__all__ = [
    "BreakerBackend",
    "BreakerHandle",
    "BreakerReading",
    "ScriptRunner",
    "StorageFactory",
    "SuccessRun",
    "TransitionCallback",
    "close_on_exit",
]

_log = get_logger("aioresil")

T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")
T = TypeVar("T")

BreakerReading = tuple[BreakerRecord, float, float]
"""``(record, record_now, wall_offset)``: a breaker's full state read at ``record_now`` (in the
record's own time base); ``wall = t + wall_offset`` turns its timestamps into Unix time."""

TransitionCallback = Callable[[Transition, float | None], None]
"""Called with each transition and the new OPEN state's retry_after (seconds) or None."""

NO_RUN = -(1 << 60)
""":attr:`SuccessRun.generation` while no run is open: no permit ever carries it."""


class SuccessRun:
    """The newest successes of a batched Redis breaker, held as a count instead of one
    buffered item each: ``count`` successes of normal permits of ``generation``, ended after
    every outcome the handle buffered before them (``recording="batched"``).

    The breaker adds an untimed success to it inline (``count += 1``) when its permit's
    generation equals ``generation``; the handle opened the run (and armed its flush) on the
    run's first success, and closes it (``generation = NO_RUN``) before it buffers anything
    else, when a flush takes it, and when it fails over: so what is sent is exactly what
    recording each success through ``handle.success_fast`` would have sent.
    """

    __slots__ = ("count", "generation")

    def __init__(self) -> None:
        self.generation = NO_RUN
        self.count = 0


@runtime_checkable
class BreakerHandle(Protocol):
    """One breaker's state in a backend."""

    name: str
    config: BreakerConfig

    view: BreakerRecord
    """The local view: ``state`` and ``generation`` are readable without I/O. For the memory
    backend it *is* the state; for Redis it is kept fresh by script replies and pub/sub.
    Breakers keep a reference to it, so a handle updates it in place and never replaces it.
    While ``view.state`` is CLOSED or DISABLED the breaker grants ``Permit(view.generation)``
    without asking the handle."""

    authoritative: bool
    """True when ``view`` is the state itself (memory): the breaker may then apply an untimed
    success to it inline, which is the hot path's largest saving."""

    success_run: SuccessRun | None
    """Where the breaker may count an untimed success of a normal permit inline when its
    generation equals the run's (a batched Redis breaker); ``None`` for the others."""

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

    async def flush(self) -> None:
        """Send outcomes held back (``recording="batched"``) now; a no-op when none are."""
        ...

    async def refresh(self, now: float, wall: float) -> BreakerReading:
        """A fresh copy of the full state for statistics: ``(record, record_now, wall_offset)``.

        ``record_now`` is "now" in the record's own time base (monotonic for memory, Redis
        ``TIME`` for Redis) and ``wall = t + wall_offset`` turns its timestamps into Unix time.
        """
        ...


@runtime_checkable
class ScriptRunner(Protocol):
    """What Redis-side storage (stores, fleet-wide policies) runs on: keys and Lua scripts."""

    clock: Clock | None
    """A test clock whose ``monotonic()`` scripts use instead of Redis ``TIME``, or None."""

    client: Any
    """The ``redis.asyncio`` client, for reads a script cannot batch (pipelined ``HGETALL``)."""

    def key(self, kind: str, name: str, part: str) -> str:
        """Key of ``part`` of object ``name`` of ``kind`` (see :mod:`aioresil.backends.keys`)."""
        ...

    async def run_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[str | int | float | bytes]
    ) -> Any:
        """One ``EVALSHA`` (reloading once on ``NOSCRIPT``); errors mapped to our tree."""
        ...

    async def run_script_staged(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[str | int | float | bytes],
        *,
        stage: tuple[str, bytes, int] | None = None,
        replicated: bool = False,
    ) -> Any:
        """One pipelined round trip: an optional staged ``SET``, the script, and (with
        ``replicated`` and the backend's ``wait_replicas``) a ``WAIT`` for the replicas."""
        ...

    async def execute(self, what: str, operation: Callable[[], Awaitable[R]]) -> R:
        """Any other Redis operation (plain reads, pipelines) under the backend's deadline
        and health state, errors mapped to our tree (see ``RedisBackend.execute``)."""
        ...


class StorageFactory(Protocol[T_co]):
    """Builds one store's storage for whichever backend it is given.

    The backend picks the method (:meth:`BreakerBackend.open_storage`): stores and policies
    never test what kind of backend they hold.
    """

    kind: str
    """The store's kind (``"dlq"``, ``"checkpoint"``, ...): names its in-process namespace."""

    def in_process(self, shared: dict[str, Any]) -> T_co:
        """Storage in this process; ``shared`` is the backend's dict for :attr:`kind`."""
        ...

    def on_scripts(self, runner: ScriptRunner) -> T_co:
        """Storage shared through ``runner`` (Redis)."""
        ...


@runtime_checkable
class BreakerBackend(Protocol):
    """Anything breakers, stores and policies can keep their state in.

    Lifecycle: an async context manager; ``aclose()`` sends what is held back and releases
    connections; ``ping()`` raises :class:`~aioresil.exceptions.BackendUnavailableError` when
    the storage cannot be reached.
    """

    clock: Clock | None
    """A test clock whose ``monotonic()`` the backend's scripts use, or None (memory: None)."""

    health: BackendHealth | None
    """The backend's health state machine (Redis), or None for a backend that cannot fail."""

    def bind_breaker(self, name: str, config: BreakerConfig) -> BreakerHandle:
        """The handle of breaker ``name``; the same name on one backend shares state."""
        ...

    async def read_breakers(
        self, handles: Sequence[BreakerHandle], now: float, wall: float
    ) -> list[BreakerReading]:
        """Every handle's full state, flushed first, in ONE round trip (an operator read).

        ``now``/``wall`` are the caller's clock readings (memory answers in that time base;
        Redis in its own ``TIME``). Raises :class:`~aioresil.exceptions.BackendError` when the
        storage cannot answer; the caller then asks each breaker (its own fallback policy).
        """
        ...

    def open_storage(self, factory: StorageFactory[T]) -> T:
        """``factory.in_process(...)`` or ``factory.on_scripts(...)``, as this backend stores."""
        ...

    async def ping(self) -> None:
        """Return when the storage answers; raise ``BackendUnavailableError`` otherwise."""
        ...

    async def check_writable(self) -> None:
        """Return when the storage takes writes (``/health/ready``); raise otherwise."""
        ...

    def add_drain(self, owner: object, drain: Callable[[], Awaitable[None]]) -> None:
        """Have ``aclose()`` await ``drain()`` first (a DLQ holding spooled entries)."""
        ...

    def discard_drain(self, owner: object) -> None:
        """Withdraw what :meth:`add_drain` registered for ``owner`` (no-op if nothing)."""
        ...

    async def aclose(self) -> None:
        """Flush what is held back and release connections (idempotent)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


async def close_on_exit(
    aclose: Callable[[], Awaitable[None]], owner: object, exc: BaseException | None
) -> None:
    """A backend's ``__aexit__``: ``await aclose()``, which raises when something held back
    could not be sent (a DLQ's spooled entries, Redis still down).

    When the block is already failing, that error must not replace the block's own: Python
    would raise the close error with the user's exception only as its hidden ``__context__``
    (the close error is itself chained ``from`` the outage), so the traceback would show our
    error and never theirs. Then the block's exception goes on, carrying the close error as a
    note, and the close error is logged. Never silent, never in the user's way.
    """
    if exc is None:
        await aclose()
        return
    try:
        await aclose()
    except Exception as close_error:
        _log.error(
            "backend_close_failed_during_exception",
            backend=repr(owner),
            error=f"{type(close_error).__name__}: {close_error}",
            exception=type(exc).__name__,
        )
        exc.add_note(
            f"aioresil: closing {owner!r} while this exception propagated also failed: "
            f"{type(close_error).__name__}: {close_error}"
        )
