"""The circuit breaker: ``async with breaker:``, ``@breaker`` and ``breaker.call()``.

All three share one code path (``__aenter__``/``__aexit__``). ``__aexit__`` receives nothing
from ``__aenter__`` and one breaker serves many tasks at once, yet each call's outcome must be
judged by the generation that granted it (an outcome from before a transition never judges the
state after it). Two kinds of call make that work:

* **Loose calls** (the hot path: CLOSED or DISABLED, no slow-call rule, not nested in a
  ticketed call) carry nothing at all. The view counts them (``loose``) with the one
  generation they were all granted under (``loose_generation``): a loose call is granted only
  while that generation is still the view's, or while no loose call is in flight. After a
  transition, new calls are ticketed until the old loose calls have drained, so every loose
  call that ends knows its generation from the view.
* **Ticketed calls** (trials, the slow-call rule, anything after a transition with loose calls
  still in flight, and every call nested in a ticketed one) push a ticket
  ``[generation, trial token or 0, start time, the enclosing ticket]`` on a ``ContextVar`` and
  pop it on exit, so a breaker used inside itself (or inside another breaker, or in a task
  started inside a guarded block) records every level with its own permit, outcome and
  duration. The view counts them (``ticketed``). A ticket is emptied when its call ends: a
  child task that inherited it from its parent sees an empty (false) ticket once the parent's
  call is over, never a live one that is not its own.

So the exit of a call tells the two kinds apart with no per-call state: while no ticketed call
is in flight anywhere (``ticketed == 0``) it is loose; otherwise its context holds a live
ticket exactly when it is ticketed (a loose call is granted only where the context holds
none, and every nested call restores the context it found). The hot path touches no context
variable, which is most of why it stays cheap; the model is pinned by the tests of
``tests/face/test_breaker_compose.py``.

One kind of code breaks the context's order: an **async generator** runs in the context of
whichever task drives it, so its call may end in another task (one that never held its
ticket, or holds another call's), or after the call around it (``async for ... break``: the
event loop closes the generator later, in a task of its own). A ticketed call entered from an
async generator's frame therefore keeps its ticket with that frame (the circuit's ``frames``,
counted as ``framed``), never in the context, and its exit, which runs in the same frame,
finds it there; an exit from a generator's frame that finds no ticket there is a loose call,
whatever the context holds. Only ticketed entries and exits look at the caller's frame, with
``sys._getframe(1)``: ``inspect.currentframe()`` would make a frame object of ``__aenter__``'s
own frame on every call, and measured twice the cost on the slow-call rule's path (issue 17).

``__aenter__`` and ``__aexit__`` are plain methods, not ``async def``: they do their work when
called and return what ``async with`` awaits, a ready awaitable (:mod:`aioresil._ready`, kept
by the breaker from its second call, see ``_entered_later``) on every path that decides
without waiting, a coroutine only where a backend must be asked or an outcome recorded
remotely. A coroutine per call cost about a sixth of a bare ``async with`` (issue 17). Code
that calls them by hand must call them where it awaits them (in the same context): the work is
done by the call, not by the first ``await``, and a permit taken by a call whose result is
never awaited is held until ``__aexit__`` gives it back.

What instances share: every ``CircuitBreaker`` bound to one name on one backend shares one
:class:`_Circuit` (kept on the backend's handle): the context variable, the in-flight count,
one subscription to the handle's transitions and one log line per transition. An instance is
referenced only weakly, and only while it has listeners, so building a breaker per request
costs a dictionary lookup and leaves nothing behind when the instance is dropped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NoReturn, ParamSpec, Self, TypeVar

from ._log import get_logger
from ._ready import DONE, Ready
from .backends.base import BreakerBackend, BreakerHandle
from .backends.memory import MemoryBackend
from .clock import Clock, SystemClock
from .core import machine
from .core.config import SHARED_RULES, BreakerConfig
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

_ASYNC_GENERATOR = inspect.CO_ASYNC_GENERATOR


_NO_HOT_PATH = machine.BreakerRecord(BreakerConfig())
"""What a breaker's hot paths read instead of its view when they must not run (slow-call rule,
call observers, a loose success that is not applied inline): never CLOSED or DISABLED, never a
loose call in flight, so both hot checks fail at once. Never written: nothing passes them."""
_NO_HOT_PATH.state = CircuitState.OPEN


_SETTLING: set[asyncio.Task[None]] = set()
"""Records running on after their caller was cancelled (referenced until they end)."""

CallObserver = Callable[[str, Outcome, float], None]
"""``observer(breaker name, outcome, seconds)``, called after each call that ran."""

Ticket = list[Any]
"""What a ticketed call's ``__aenter__`` leaves for its ``__aexit__``: ``[generation, trial
token or 0, start time, the enclosing ticket or None]``, emptied when the call ends (a list,
not a tuple, for that; as cheap to build)."""


# Enum ``.value`` is a Python-level descriptor (slow in 3.11); health endpoints serialize
# thousands of these, so look the plain strings up instead.
_STATE_VALUES = {state: state.value for state in CircuitState}
_new_row = tuple.__new__


def config_rules(config: BreakerConfig) -> dict[str, Any]:
    """The shared rules of ``config`` and their fingerprint, JSON-ready (cached per config):
    ``BreakerStats.to_dict()["config"]``, and the operator rows' JSON."""
    rules = _RULES_CACHE.get(id(config))
    if rules is None or rules[0] is not config:
        out: dict[str, Any] = {name: getattr(config, name) for name, _ in SHARED_RULES}
        out["fingerprint"] = config.fingerprint
        if len(_RULES_CACHE) > 1024:
            _RULES_CACHE.clear()
        rules = _RULES_CACHE[id(config)] = (config, out)
    return dict(rules[1])


_RULES_CACHE: dict[int, tuple[BreakerConfig, dict[str, Any]]] = {}


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
    config: BreakerConfig | None = None
    """The config in force: for a Redis breaker, the one stored with it (the newest process
    to bind the name wins), which may not be this process's own."""

    @property
    def config_fingerprint(self) -> str | None:
        """Fingerprint of :attr:`config` (equal rules, equal fingerprint, in every process)."""
        return None if self.config is None else self.config.fingerprint

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
            "config": None if self.config is None else config_rules(self.config),
        }


class BreakerRow(NamedTuple):
    """One breaker's figures at one moment: the fields of :class:`BreakerStats`, as a named
    tuple (cheap to build by the thousand; see :mod:`aioresil.health.rows`).

    ``tests/face/test_health_rows.py`` pins rows to the statistics they stand for.
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
    config: BreakerConfig | None = None
    """The config in force (for a Redis breaker, the one stored with it)."""

    @property
    def config_fingerprint(self) -> str | None:
        """As :attr:`BreakerStats.config_fingerprint`."""
        return None if self.config is None else self.config.fingerprint


class _Circuit:
    """What every :class:`CircuitBreaker` bound to one handle shares (see the module notes)."""

    __slots__ = ("breakers", "frames", "get", "name", "set")

    def __init__(self, handle: BreakerHandle, name: str) -> None:
        tickets: ContextVar[Ticket | None] = ContextVar(f"aioresil.breaker.{name}")
        self.get = tickets.get
        self.set = tickets.set
        self.name = name
        self.frames: dict[FrameType, list[Ticket]] = {}
        """Tickets of calls entered from an async generator, by its frame (see the module
        notes): the frame is where the call's exit runs, whichever task drives it."""
        self.breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
        """Instances with listeners (weakly: dropping an instance unsubscribes it)."""
        handle.subscribe(self._on_transition)
        handle.subscribe_events(self._on_backend_event)

    def _on_transition(self, transition: Transition, retry_after: float | None) -> None:
        level = "warning" if transition.new in (_OPEN, CircuitState.FORCED_OPEN) else "info"
        getattr(_log, level)(
            "circuit_state_changed",
            breaker=self.name,
            old=_STATE_VALUES[transition.old],
            new=_STATE_VALUES[transition.new],
            trigger=transition.trigger.value,
        )
        for breaker in list(self.breakers):
            breaker._dispatch(
                StateChanged(
                    self.name,
                    transition.old,
                    transition.new,
                    breaker._wall(),
                    transition.trigger,
                    retry_after,
                )
            )

    def _on_backend_event(self, event: BreakerEvent) -> None:
        for breaker in list(self.breakers):
            breaker._dispatch(event)


class GuardedCalls:
    """``call()`` and ``@decorator`` on top of ``async with self``.

    Why a mixin: the three interfaces of a breaker must be one code path, and a breaker
    built of breakers (:class:`~aioresil.QuorumBreaker`) gets them from here, not a copy.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # what the class using this mixin provides

        def __aenter__(self) -> Awaitable[Any]: ...

        def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> Awaitable[Any]: ...

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


class CircuitBreaker(GuardedCalls):
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
        "_authoritative",
        "_call_observers",
        "_circuit",
        "_classify_cache",
        "_clock",
        "_entered",
        "_get_ticket",
        "_handle",
        "_inline_view",
        "_listeners",
        "_loose_view",
        "_mono",
        "_set_ticket",
        "_success_run",
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
        handle = (backend or MemoryBackend()).bind_breaker(name, config)
        self._handle: BreakerHandle = handle
        self._view = handle.view
        circuit = handle.hub
        if circuit is None:
            circuit = handle.hub = _Circuit(handle, name)
        self._circuit: _Circuit = circuit
        self._listeners: list[Listener] = []
        self._set_ticket = circuit.set  # bound once: the hot path skips two lookups
        self._get_ticket = circuit.get
        self._call_observers: list[CallObserver] = []
        # The hot paths read their view through these two: the view itself, or _NO_HOT_PATH,
        # a record that never passes their first check, so the general path runs instead
        # (one attribute read where a flag check and a view read were). Calls may be loose
        # unless the slow-call rule needs their duration (then a success may trip the circuit
        # and must go through the core); a loose success is applied inline only on an
        # authoritative (memory) backend.
        slow_rule = config.slow_call_duration is not None
        self._timed = config.timed
        self._loose_view = _NO_HOT_PATH if slow_rule else handle.view
        self._inline_view = handle.view if handle.authoritative and not slow_rule else _NO_HOT_PATH
        self._authoritative = self._handle.authoritative
        # A batched Redis breaker counts untimed successes of the open run inline.
        self._success_run = handle.success_run
        self._classify_cache: dict[type[BaseException], Outcome] = {}
        # What __aenter__ returns when it decided without awaiting: ``self``, ready, kept from
        # the second such call (see _entered_later): None before the first, False after it.
        self._entered: Ready[Any] | Literal[False] | None = None

    # ------------------------------------------------------------------ guarding

    def __aenter__(self) -> Awaitable[Self]:
        # A plain method, not ``async def``: every path that decides without awaiting returns
        # a ready awaitable (aioresil/_ready.py, kept from the second call) or raises; only the
        # remote acquire returns a coroutine. Awaited by ``async with``, it behaves as an
        # ``async def`` would.
        view = self._loose_view  # the view, or _NO_HOT_PATH (see __init__)
        state = view.state
        if (state is _CLOSED or state is _DISABLED) and (
            not view.ticketed or not self._get_ticket(None)
        ):
            # Hot path: the local view grants a normal permit without asking the backend,
            # as a loose call (see the module notes): no live ticket in this context.
            if not view.loose:
                view.loose_generation = view.generation
                view.loose = 1
                return self._entered or self._entered_later()
            if view.loose_generation == view.generation:
                view.loose += 1
                return self._entered or self._entered_later()
            # Loose calls of an older generation are still in flight: this one is ticketed.
        view = self._view
        state = view.state
        if state is _CLOSED or state is _DISABLED:
            self._hold([view.generation, 0, self._mono(), None], sys._getframe(1))
            return self._entered or self._entered_later()
        now = self._mono()
        if state is _OPEN and self._authoritative and now < view.open_until:
            # The hot rejection (memory backend, OPEN, timeout not elapsed): the documented
            # twin of machine.acquire's first rejection, inlined like the hot success.
            view.rejected += 1
            retry_after = view.open_until - now
            if self._listeners:
                self._dispatch(CallRejected(self.name, _OPEN, self._wall(), retry_after))
            raise CircuitOpenError(self.name, _OPEN, retry_after)
        # Not CLOSED: ask the handle, locally first (an OPEN rejection is decided here, with
        # no coroutine of its own: rejections are a hot path too).
        decision = self._handle.acquire_local(now)
        if decision is None:
            return self._acquire_remote(now, sys._getframe(1))
        if isinstance(decision, Rejection):
            self._reject(decision)
        self._hold([decision.generation, decision.token, now, None], sys._getframe(1))
        return self._entered or self._entered_later()

    def _entered_later(self) -> Awaitable[Self]:
        """What ``__aenter__`` returns before the breaker holds its ready self: a ready value
        made for the first call and not kept, then from the second call one made and kept.

        Why not kept from construction (or from the first call): the ready value holds the
        breaker, which would hold it, a reference cycle that only the cycle collector frees.
        A breaker built per request for one call is freed, and its listeners silenced, the
        moment it is dropped (``tests/face/test_ready.py``); one used for many calls pays one
        extra allocation, then never again, and is freed by the cycle collector. Every call
        gets the same kind of awaitable either way (never a coroutine on these paths).
        """
        ready: Ready[Self] = Ready(self)
        if self._entered is None:
            self._entered = False
        else:
            self._entered = ready
        return ready

    def __getstate__(self) -> object:
        """What ``copy``/``deepcopy`` take: the slots (and a subclass's ``__dict__``), without
        the ready self, which holds this instance: a copy makes its own."""
        state = super().__getstate__()
        attributes, slots = state if isinstance(state, tuple) else (state, None)
        slots = dict(slots or {})
        slots["_entered"] = None
        return attributes, slots

    async def _acquire_remote(self, now: float, caller: FrameType) -> Self:
        """``__aenter__`` when the handle must ask its backend (``caller``: the frame of the
        ``async with``)."""
        decision = await self._handle.acquire_remote(now)
        if isinstance(decision, Rejection):
            self._reject(decision)
        self._hold([decision.generation, decision.token, now, None], caller)
        return self

    def _hold(self, ticket: Ticket, caller: FrameType) -> None:
        """Keep a ticketed call's ticket where its exit will find it: with the async
        generator frame that entered it, or on the context (see the module notes)."""
        view = self._view
        view.ticketed += 1
        if caller.f_code.co_flags & _ASYNC_GENERATOR:
            self._circuit.frames.setdefault(caller, []).append(ticket)
            view.framed += 1
            return
        ticket[3] = self._get_ticket(None)
        self._set_ticket(ticket)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        # A plain method like __aenter__: DONE when the outcome is recorded without awaiting,
        # else the coroutine that records it.
        rec = self._inline_view  # the view, or _NO_HOT_PATH (see __init__)
        if (
            exc_type is None
            and rec.loose
            and (not rec.ticketed or (not rec.framed and not self._get_ticket(None)))
        ):
            # The hot exit, a loose call's success on the memory backend: the documented twin
            # of machine.record_success (untimed, no slow-call rule), inlined because it is
            # the hot path; tests/core/test_machine.py pins that both give the same record.
            # A matching generation means the state is still the CLOSED or DISABLED that
            # granted the permit; consecutive_failures is always 0 in DISABLED.
            rec.loose -= 1
            rec.successes += 1
            if rec.loose_generation == rec.generation:
                rec.consecutive_failures = 0
                window = rec.window
                if window is not None and rec.state is _CLOSED:
                    if not self._timed:  # a CountWindow (a full one of successes stays so)
                        if not window.spotless:  # type: ignore[union-attr]
                            window.add_success()
                    else:  # a TimeWindow: the documented twin of its add_success_at
                        now = self._mono()
                        if now < window.edge:  # type: ignore[union-attr]
                            window.newest[1] += 1  # type: ignore[union-attr]
                            window.calls += 1
                        else:
                            window.add(False, False, now)
            return DONE
        rec = self._view
        ticket: Ticket | None = None
        framed = False
        if rec.ticketed:
            caller = sys._getframe(1)  # where the `async with` is written
            frames = self._circuit.frames
            held = frames.get(caller) if rec.framed else None
            if held:  # a call entered from this async generator frame
                ticket = held.pop()
                if not held:
                    del frames[caller]
                rec.framed -= 1
                framed = True
            elif not caller.f_code.co_flags & _ASYNC_GENERATOR:
                ticket = self._get_ticket(None)
            # else a generator's loose call: the context's ticket, if any, is another call's
        if not ticket:  # a loose call (see the module notes)
            if not rec.loose:
                raise RuntimeError(f"{self!r}: __aexit__ without a matching __aenter__")
            generation = rec.loose_generation
            rec.loose -= 1
            if exc_type is None:
                run = self._success_run
                if run is not None and generation == run.generation:
                    # The documented twin of handle.success_fast's batched path (Redis,
                    # recording="batched"): one more success in the run the handle opened and
                    # will flush; tests/backends/test_batched_run.py pins that both send the
                    # same batches.
                    run.count += 1
                    return DONE
                now = self._mono() if self._timed else 0.0
                pending = self._handle.success_fast(generation, now, 0.0)
                if pending is not None:
                    return self._settle(pending, None)
                return DONE
            return self._finish(generation, 0, None, exc_type)
        generation, token, started, outer = ticket
        ticket.clear()  # ended: a child task that inherited it must not take it for its own
        if not framed:
            self._set_ticket(outer)
        rec.ticketed -= 1
        if exc_type is None and not token:
            now = self._mono()
            if self._call_observers:
                self._observe(Outcome.SUCCESS, now - started)
            pending = self._handle.success_fast(generation, now, now - started)
            if pending is not None:
                return self._settle(pending, None)
            return DONE
        return self._finish(generation, token, started, exc_type)

    def _finish(
        self,
        generation: int,
        token: int,
        started: float | None,
        exc_type: type[BaseException] | None,
    ) -> Awaitable[None]:
        """Record an outcome through the handle: what to await for it (DONE when the handle
        recorded it at once)."""
        now = self._mono()
        duration = 0.0 if started is None else now - started
        outcome = Outcome.SUCCESS if exc_type is None else self._classify(exc_type)
        if self._call_observers and started is not None:
            self._observe(outcome, duration)
        pending = self._handle.record(Permit(generation, token), outcome, now, duration)
        if pending is None:
            return DONE
        if token or outcome is Outcome.CANCELLED:
            return self._settle_shielded(pending, exc_type)
        return self._settle(pending, exc_type)

    async def _settle_shielded(
        self, pending: Awaitable[None], exc_type: type[BaseException] | None
    ) -> None:
        """Record a trial's outcome (or give a cancelled call's permit back) whatever cancels
        the caller: an unrecorded trial would hold its slot until ``trial_lease``.

        Inside a cancelled anyio scope (a Timeout policy, a task group) every await is
        cancelled again at once: an anyio shield covers that. A plain ``task.cancel()`` (as
        ``asyncio.wait_for`` does) passes through anyio's shield, so on asyncio the record
        runs in a task of its own: the caller may stop waiting, the record still completes.
        Bounded by ``RELEASE_TIMEOUT`` so a dead backend cannot keep it forever.
        """

        import anyio  # here, not at the top: ``import aioresil`` stays light

        async def bounded() -> None:
            with anyio.move_on_after(RELEASE_TIMEOUT):
                await self._settle(pending, exc_type)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): anyio's shield is the whole story
            with anyio.CancelScope(shield=True):
                await bounded()
            return
        task = loop.create_task(bounded())
        _SETTLING.add(task)
        task.add_done_callback(_SETTLING.discard)
        with anyio.CancelScope(shield=True):
            await asyncio.shield(task)

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
        self._circuit.breakers.add(self)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; a ``ValueError`` if it was not added."""
        self._listeners.remove(listener)
        if not self._listeners:
            self._circuit.breakers.discard(self)

    def add_call_observer(self, observer: CallObserver) -> None:
        """Call ``observer(name, outcome, seconds)`` after every call that ran under the breaker.

        For call-duration metrics (:class:`aioresil.health.instruments.CallMetrics`). An
        observed breaker times every call (two clock reads), which it otherwise does only for
        the slow-call rule; observers must be quick and must not raise.
        """
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {observer!r}")
        self._call_observers.append(observer)
        # Every call is ticketed from now on: the ticket carries the start time.
        self._loose_view = self._inline_view = _NO_HOT_PATH

    def _observe(self, outcome: Outcome, seconds: float) -> None:
        for observer in self._call_observers:
            try:
                observer(self.name, outcome, seconds)
            except Exception:
                _log.exception("call_observer_failed", breaker=self.name)

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
    """Build :class:`BreakerStats` from a record read at ``now`` (``wall = t + wall_offset``).

    The rules reported are the record's own (the config in force), not ``config``.
    """
    return BreakerStats(**row_from_record(name, rec, now, wall_offset)._asdict())


def row_from_record(
    name: str, rec: machine.BreakerRecord, now: float, wall_offset: float
) -> BreakerRow:
    """The figures of a record read at ``now``, as a :class:`BreakerRow`: the one place they
    are computed, for :func:`stats_from_record` and the operator endpoints alike."""
    config = rec.config
    state = rec.state
    opened = rec.opened_at
    window = rec.window
    successes, failures, ignored = rec.successes, rec.failures, rec.ignored
    # tuple.__new__ directly: the named tuple's own __new__ is a Python function, and the
    # operator endpoints build a thousand rows per request.
    return _new_row(
        BreakerRow,
        (
            name,
            state,
            failures,
            successes,
            ignored,
            rec.slow,
            successes + failures + ignored,
            rec.rejected,
            rec.consecutive_failures,
            config.failure_threshold,
            None if window is None else machine.failure_rate(rec, config, now),
            None if window is None else machine.slow_call_rate(rec, config, now),
            len(rec.trials),
            None if opened is None else datetime.fromtimestamp(opened + wall_offset, tz=UTC),
            max(rec.open_until - now, 0.0) if state is _OPEN else None,
            config.recovery_timeout_for(rec.reopen_count),  # 0 and 1 both: the first timeout
            config,
        ),
    )
