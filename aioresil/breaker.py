"""The circuit breaker: ``async with breaker:``, ``@breaker`` and ``breaker.call()``.

All three share one code path (``__aenter__``/``__aexit__``). Per-call bookkeeping (which
generation granted the call, whether it holds a trial permit, when it started) travels in a
``ContextVar``, because ``__aexit__`` receives nothing from ``__aenter__`` and one breaker
serves many tasks at once. On the hot path (CLOSED, no timing rule) that value is a plain
``int``, so a guarded call costs two attribute reads and a context-variable write more than a
bare ``async with``.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NoReturn, ParamSpec, Self, TypeVar

from ._log import get_logger
from .backends.base import BreakerBackend, BreakerHandle
from .backends.memory import MemoryBackend
from .clock import Clock, SystemClock
from .core import machine
from .core.config import BreakerConfig
from .core.machine import Outcome, Permit, Rejection, Transition
from .core.states import CircuitState, Trigger
from .events import BreakerEvent, CallRejected, Listener, StateChanged
from .exceptions import AioresilError, CircuitOpenError

__all__ = ["BreakerStats", "CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

_log = get_logger("aioresil")

_CLOSED = CircuitState.CLOSED
_DISABLED = CircuitState.DISABLED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN

RELEASE_TIMEOUT = 5.0
"""Seconds a cancelled call may spend giving its trial permit back to a shared backend."""

CallObserver = Callable[[str, Outcome, float], None]
"""``observer(breaker name, outcome, seconds)``, called after each call that ran."""

Ticket = int | tuple[int, int, float]
"""What ``__aenter__`` leaves for ``__aexit__``: the generation alone on the hot path, else
``(generation, trial token or 0, start time)``."""


# Enum ``.value`` is a Python-level descriptor (slow in 3.11); health endpoints serialize
# thousands of these, so look the plain strings up instead.
_STATE_VALUES = {state: state.value for state in CircuitState}


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStats:
    """A breaker's statistics at one moment. ``to_dict()`` gives the JSON-ready form.

    Counters cover the time since the last ``reset()``: ``total_calls`` counts calls that ran
    and ended (successes + failures + ignored); rejected and cancelled calls are not in it.
    """

    name: str
    state: CircuitState
    failure_count: int
    success_count: int
    ignored_count: int
    slow_call_count: int
    total_calls: int
    rejected_calls: int
    consecutive_failures: int
    failure_threshold: int | None
    failure_rate: float | None
    slow_call_rate: float | None
    half_open_calls: int
    opened_at: datetime | None
    retry_after: float | None
    recovery_timeout: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the state as its string value, ``opened_at`` as ISO-8601 or ``None``."""
        return {
            "name": self.name,
            "state": _STATE_VALUES[self.state],
            "failure_count": self.failure_count,
            "success_count": self.success_count,
            "ignored_count": self.ignored_count,
            "slow_call_count": self.slow_call_count,
            "total_calls": self.total_calls,
            "rejected_calls": self.rejected_calls,
            "consecutive_failures": self.consecutive_failures,
            "failure_threshold": self.failure_threshold,
            "failure_rate": self.failure_rate,
            "slow_call_rate": self.slow_call_rate,
            "half_open_calls": self.half_open_calls,
            "opened_at": None if self.opened_at is None else self.opened_at.isoformat(),
            "retry_after": self.retry_after,
            "recovery_timeout": self.recovery_timeout,
        }


class CircuitBreaker:
    """Stops calling a failing dependency, then lets a few trial calls find out if it is back.

    Args:
        name: identifies the circuit; breakers with one name on one backend share state
            (across processes, with Redis).
        config: the rules (:class:`BreakerConfig`); defaults to ``BreakerConfig()``.
        backend: where state lives; a private in-memory backend by default.
        clock: time source (``aioresil.testing.FakeClock`` in tests).

    Example::

        breaker = CircuitBreaker("payments", config=BreakerConfig(failure_threshold=3))

        async with breaker:            # raises CircuitOpenError instead of running the block
            await charge(card)

        @breaker
        async def fetch(url: str) -> bytes: ...

    The guarded code's own exceptions always propagate unchanged. Cancellation is never a
    failure, and a trial permit held by a cancelled call is given back.
    """

    __slots__ = (
        "__weakref__",
        "_call_observers",
        "_classify_cache",
        "_clock",
        "_get_ticket",
        "_handle",
        "_inline",
        "_listeners",
        "_mono",
        "_set_ticket",
        "_slow_rule",
        "_ticket",
        "_timed",
        "_view",
        "_wall",
        "config",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        config: BreakerConfig | None = None,
        backend: BreakerBackend | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if config is None:
            config = BreakerConfig()
        elif not isinstance(config, BreakerConfig):
            raise TypeError(f"config must be a BreakerConfig, got {type(config).__name__}")
        self.name = name
        self.config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        # Bind the C functions directly for the default clock: one Python frame less per read.
        system = type(self._clock) is SystemClock
        self._mono = time.monotonic if system else self._clock.monotonic
        self._wall = time.time if system else self._clock.time
        self._handle: BreakerHandle = (backend or MemoryBackend()).bind_breaker(name, config)
        self._view = self._handle.view
        self._handle.subscribe(self._on_transition)
        self._handle.subscribe_events(self._on_backend_event)
        self._listeners: list[Listener] = []
        self._call_observers: list[CallObserver] = []
        self._ticket: ContextVar[Ticket | None] = ContextVar(f"aioresil.breaker.{name}")
        self._set_ticket = self._ticket.set  # bound once: the hot path skips two lookups
        self._get_ticket = self._ticket.get
        self._slow_rule = config.slow_call_duration is not None
        self._timed = config.timed
        # Memory successes of normal permits are applied inline unless the slow-call rule
        # needs a duration (then a success may trip the circuit and must go through the core).
        self._inline = self._handle.authoritative and config.slow_call_duration is None
        self._classify_cache: dict[type[BaseException], Outcome] = {}

    # ------------------------------------------------------------------ guarding

    async def __aenter__(self) -> Self:
        view = self._view
        state = view.state
        if state is _CLOSED or state is _DISABLED:
            # Hot path: the local view grants a normal permit without asking the backend.
            if self._slow_rule:
                self._set_ticket((view.generation, 0, self._mono()))
            else:
                self._set_ticket(view.generation)
            return self
        await self._enter_slow()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            ticket = self._get_ticket(None)
            if ticket.__class__ is int:
                if self._inline:
                    # machine.record_success, inlined for the memory backend without a
                    # slow-call rule (tests/test_machine.py pins that both give the same
                    # record).
                    # A matching generation means the state is still the CLOSED or DISABLED
                    # that granted the permit; consecutive_failures is always 0 in DISABLED.
                    rec = self._view
                    rec.successes += 1
                    if ticket == rec.generation:
                        rec.consecutive_failures = 0
                        window = rec.window
                        if window is not None and rec.state is _CLOSED:
                            if self._timed:
                                window.add(False, False, self._mono())  # a TimeWindow
                            else:
                                window.add_success()  # a CountWindow
                    return
                now = self._mono() if self._timed else 0.0
                pending = self._handle.success_fast(ticket, now, 0.0)
                if pending is not None:
                    await self._settle(pending, None)
                return
            if ticket is not None and ticket[1] == 0:  # type: ignore[index]
                generation, _, started = ticket  # type: ignore[misc]
                now = self._mono()
                if self._call_observers:
                    self._observe(Outcome.SUCCESS, now - started)
                pending = self._handle.success_fast(generation, now, now - started)
                if pending is not None:
                    await self._settle(pending, None)
                return
            await self._exit_slow(ticket, None)
            return
        await self._exit_slow(self._ticket.get(None), exc_type)
        return

    async def _enter_slow(self) -> None:
        now = self._mono()
        handle = self._handle
        decision = handle.acquire_local(now)
        if decision is None:
            decision = await handle.acquire_remote(now)
        if isinstance(decision, Rejection):
            self._reject(decision)
        generation, token = decision.generation, decision.token
        if token or self._slow_rule:
            self._ticket.set((generation, token, now))
        else:
            self._ticket.set(generation)

    async def _exit_slow(self, ticket: Ticket | None, exc_type: type[BaseException] | None) -> None:
        if ticket is None:
            return  # no permit in this context (nothing to report)
        now = self._mono()
        if ticket.__class__ is tuple:
            self._ticket.set(None)  # a nested use of this breaker must not reuse the permit
            generation, token, started = ticket
        else:
            generation, token, started = ticket, 0, now  # type: ignore[assignment]
        outcome = Outcome.SUCCESS if exc_type is None else self._classify(exc_type)
        if self._call_observers:
            self._observe(outcome, now - started)
        pending = self._handle.record(Permit(generation, token), outcome, now, now - started)
        if pending is None:
            return
        if outcome is Outcome.CANCELLED:
            # Giving a trial permit back must survive the cancellation that ended the call:
            # inside a cancelled anyio scope (a Timeout policy, a task group) every await is
            # cancelled again at once. Shielded, and bounded so a dead backend cannot hang us.
            # (anyio is imported here, not at the top: ``import aioresil`` stays light.)
            import anyio

            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
                await self._settle(pending, exc_type)
            return
        await self._settle(pending, exc_type)

    async def _settle(self, pending: Awaitable[None], exc_type: type[BaseException] | None) -> None:
        # Recording happens after the guarded block ran: a storage problem here must neither
        # replace the user's exception nor turn their success into an error.
        try:
            await pending
        except AioresilError as error:
            _log.warning(
                "circuit_record_failed",
                breaker=self.name,
                error=str(error),
                during_exception=exc_type is not None,
            )

    def _classify(self, exc_type: type[BaseException]) -> Outcome:
        outcome = self._classify_cache.get(exc_type)
        if outcome is None:
            config = self.config
            if not issubclass(exc_type, Exception):
                outcome = Outcome.CANCELLED  # CancelledError, KeyboardInterrupt, trio.Cancelled
            elif issubclass(exc_type, config.ignore_exceptions):
                outcome = Outcome.IGNORED
            elif issubclass(exc_type, config.record_exceptions):
                outcome = Outcome.FAILURE
            else:
                outcome = Outcome.SUCCESS
            if len(self._classify_cache) < 256:
                self._classify_cache[exc_type] = outcome
        return outcome

    def _reject(self, rejection: Rejection) -> NoReturn:
        if self._listeners:
            self._dispatch(
                CallRejected(self.name, rejection.state, self._wall(), rejection.retry_after)
            )
        raise CircuitOpenError(self.name, rejection.state, rejection.retry_after)

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` under the breaker."""
        async with self:
            return await fn(*args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate an ``async def`` so every call runs under the breaker."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@{type(self).__name__} decorates async functions; {fn!r} is not one")

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            async with self:
                return await fn(*args, **kwargs)

        return guarded

    # ------------------------------------------------------------------ state

    @property
    def handle(self) -> BreakerHandle:
        """This breaker's handle in its backend (for registries and operator tools: read
        many breakers at once with ``backend.read_breakers([b.handle for b in ...])``)."""
        return self._handle

    @property
    def state(self) -> CircuitState:
        """The state as this process sees it now, without I/O (:meth:`stats` reads it fresh).

        For a Redis-shared breaker this is the local view: before its first call it reports
        OPEN, meaning "unknown, the next call asks Redis".
        """
        return self._view.state

    async def stats(self) -> BreakerStats:
        """A fresh snapshot of the breaker (one round trip on Redis)."""
        now = self._mono()
        wall = self._wall()
        rec, rec_now, wall_offset = await self._handle.refresh(now, wall)
        return stats_from_record(self.name, self.config, rec, rec_now, wall_offset)

    async def reset(self) -> None:
        """Back to CLOSED with every counter cleared."""
        await self._handle.operator(Trigger.RESET, self._mono())

    async def force_open(self) -> None:
        """Reject every call (``FORCED_OPEN``) until :meth:`reset`."""
        await self._handle.operator(Trigger.FORCE_OPEN, self._mono())

    async def disable(self) -> None:
        """Let every call through (``DISABLED``), still counting, until :meth:`reset`."""
        await self._handle.operator(Trigger.DISABLE, self._mono())

    # ------------------------------------------------------------------ events

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every :class:`StateChanged`, :class:`CallRejected`, ..."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; a ``ValueError`` if it was not added."""
        self._listeners.remove(listener)

    def add_call_observer(self, observer: CallObserver) -> None:
        """Call ``observer(name, outcome, seconds)`` after every call that ran under the breaker.

        For call-duration metrics (:class:`aioresil.health.instruments.CallMetrics`). An
        observed breaker times every call (two clock reads), which it otherwise does only for
        the slow-call rule; observers must be quick and must not raise.
        """
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {observer!r}")
        self._call_observers.append(observer)
        self._slow_rule = True  # the ticket carries the start time from now on
        self._inline = False

    def _observe(self, outcome: Outcome, seconds: float) -> None:
        for observer in self._call_observers:
            try:
                observer(self.name, outcome, seconds)
            except Exception:
                _log.exception("call_observer_failed", breaker=self.name)

    def _on_transition(self, transition: Transition, retry_after: float | None) -> None:
        level = "warning" if transition.new in (_OPEN, CircuitState.FORCED_OPEN) else "info"
        getattr(_log, level)(
            "circuit_state_changed",
            breaker=self.name,
            old=transition.old.value,
            new=transition.new.value,
            trigger=transition.trigger.value,
        )
        if self._listeners:
            self._dispatch(
                StateChanged(
                    self.name,
                    transition.old,
                    transition.new,
                    self._wall(),
                    transition.trigger,
                    retry_after,
                )
            )

    def _on_backend_event(self, event: BreakerEvent) -> None:
        if self._listeners:
            self._dispatch(event)

    def _dispatch(self, event: BreakerEvent) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                _log.exception("listener_failed", breaker=self.name, listener=repr(listener))

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._view.state.value}>"


def stats_from_record(
    name: str,
    config: BreakerConfig,
    rec: machine.BreakerRecord,
    now: float,
    wall_offset: float,
) -> BreakerStats:
    """Build :class:`BreakerStats` from a record read at ``now`` (``wall = t + wall_offset``)."""
    retry_after: float | None = None
    if rec.state is _OPEN:
        retry_after = max(rec.open_until - now, 0.0)
    opened_at = None if rec.opened_at is None else rec.opened_at + wall_offset
    return BreakerStats(
        name=name,
        state=rec.state,
        failure_count=rec.failures,
        success_count=rec.successes,
        ignored_count=rec.ignored,
        slow_call_count=rec.slow,
        total_calls=rec.total_calls,
        rejected_calls=rec.rejected,
        consecutive_failures=rec.consecutive_failures,
        failure_threshold=config.failure_threshold,
        failure_rate=machine.failure_rate(rec, config, now),
        slow_call_rate=machine.slow_call_rate(rec, config, now),
        half_open_calls=len(rec.trials),
        opened_at=_utc(opened_at),
        retry_after=retry_after,
        recovery_timeout=config.recovery_timeout_for(max(rec.reopen_count, 1)),
    )
