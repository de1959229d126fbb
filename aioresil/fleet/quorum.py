"""Quorum breakers: one sick instance cannot open the fleet's circuit; K sick instances do.

Why: a breaker shared through Redis lets any one process open the circuit for all of them
(Polly #215/#287: "a shared breaker lets one sick pod open the circuit for everyone"). A pod
with a broken network path, an exhausted pool or a bad deploy sees 100 % failures while the
dependency is fine for everyone else. A :class:`QuorumBreaker` keeps two circuits:

* a **local** circuit (in this process, your :class:`~aioresil.BreakerConfig`): this
  instance's own failures crossing the threshold stop *this instance* calling, nobody else;
* the **fleet** circuit (a shared breaker of the same name on the backend), which opens only
  when at least ``quorum`` distinct instances reported their local circuit open within
  ``report_ttl`` seconds. Its recovery (half-open trials, ``success_threshold``, backoff) is the
  ordinary breaker's, with your config.

The gate between them is one script (``quorum.lua``): an instance whose local circuit opens
reports itself (a sorted set of ``instance -> expiry`` under the breaker's hash tag); the
report that brings the live reporters to ``quorum`` is answered "trip", once per TTL, and that
instance records one failure in the fleet circuit (configured with ``failure_threshold=1``,
so that one failure opens it). It then reads the fleet circuit back: open (by it or already)
*confirms* the trip, which holds off the next one for the TTL; anything else (Redis
unreachable, the circuit half-open with its trial slots taken) *releases* it, uncounted, so
the next report with a quorum trips again. A trip neither confirmed nor released (the
process died) holds for ``min(report_ttl, 10 s)``. An instance whose local circuit closes
again withdraws its report; a dead instance's report expires. Nothing in ``breaker.lua``
knows about quorums.

Cost: while both circuits are closed a call costs two in-process breakers and no round trip;
a report (one script call) happens only when a local circuit opens or closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import structlog

from ..backends.memory import MemoryBackend
from ..backends.scripts import load_script
from ..breaker import BreakerStats, CircuitBreaker
from ..clock import Clock, SystemClock
from ..core.config import BreakerConfig
from ..core.states import CircuitState
from ..exceptions import AioresilError
from ..policies.base import ContextStack
from ._common import (
    FleetBackend,
    Split,
    check_backend,
    instance_id,
    memory_now_ms,
    now_ms_arg,
    text,
)

__all__ = [
    "QuorumBreaker",
    "QuorumConfig",
    "QuorumModel",
    "QuorumReported",
    "QuorumStats",
    "QuorumTrip",
]

P = ParamSpec("P")
R = TypeVar("R")

_log = structlog.get_logger("aioresil")
_OPEN = CircuitState.OPEN
_CLOSED = CircuitState.CLOSED
_DISABLED = CircuitState.DISABLED
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
#: The longest an announced trip holds off the next one before it is confirmed (seconds).
UNCONFIRMED_TRIP_LIMIT = 10.0


class QuorumTrip(Exception):
    """The failure a quorum records in the fleet circuit to open it (never raised to you)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumConfig:
    """How many instances must agree before the fleet circuit opens.

    Kept apart from :class:`~aioresil.BreakerConfig` on purpose: the breaker's rules decide
    when *one* instance is sick (its local circuit); these decide when the *fleet* believes it.

    Attributes:
        quorum: distinct instances (K >= 1) whose local circuit must have opened within
            ``report_ttl`` seconds. With K >= 2 one instance failing 100 % of its calls never
            opens the fleet circuit.
        report_ttl: seconds an instance's report counts; a process that died without
            withdrawing it ages out after this.
        instance: this process's id; :func:`~aioresil.fleet.instance_id` (``host:pid:random``)
            by default.
    """

    quorum: int = 2
    report_ttl: float = 30.0
    instance: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) or self.quorum < 1:
            raise ValueError(f"quorum must be an int >= 1, got {self.quorum!r}")
        ttl = self.report_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 1e9:
            raise ValueError(f"report_ttl must be a number of seconds > 0, got {ttl!r}")
        if self.instance is not None and (
            not isinstance(self.instance, str) or not self.instance or len(self.instance) > 200
        ):
            raise ValueError(
                f"instance must be a non-empty str (<= 200 chars), got {self.instance!r}"
            )


@dataclass(frozen=True, slots=True)
class QuorumReported:
    """``quorum_reported``: ``instance`` reported its local circuit open (``sick``) or closed.

    ``reporters`` are the live reporters after the report; ``tripped`` is true for the one
    report that opened the fleet circuit.
    """

    name: str
    instance: str
    sick: bool
    reporters: tuple[str, ...]
    quorum: int
    tripped: bool
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumStats:
    """A quorum breaker at one moment: both circuits and who is reporting."""

    name: str
    instance: str
    quorum: int
    report_ttl: float
    fleet: BreakerStats
    local: BreakerStats
    reporters: dict[str, float]
    """Live reporters -> seconds their report still counts."""
    trips: int
    last_trip_ago: float | None
    last_trip_instances: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance": self.instance,
            "quorum": self.quorum,
            "report_ttl": self.report_ttl,
            "fleet": self.fleet.to_dict(),
            "local": self.local.to_dict(),
            "reporters": dict(self.reporters),
            "trips": self.trips,
            "last_trip_ago": self.last_trip_ago,
            "last_trip_instances": list(self.last_trip_instances),
        }


_Reply = tuple[int, int, float, str, list[tuple[str, float]]]


@dataclass(slots=True)
class QuorumModel:
    """``quorum.lua`` in Python: the memory store, and the script's reference model."""

    reports: dict[str, float] = field(default_factory=dict)
    trips: int = 0
    hold: float = 0.0
    at: float | None = None
    who: str = ""
    pending: str | None = None
    before: tuple[float | None, str] = (None, "")

    def step(
        self,
        op: str,
        now: float,
        instance: str,
        ttl: float,
        quorum: int,
        limit: float | None = None,
    ) -> _Reply:
        self.reports = {i: e for i, e in self.reports.items() if e > now}
        flag = 0
        if op == "report":
            self.reports[instance] = now + ttl
            if len(self.reports) >= quorum and now >= self.hold:
                flag = 1
                self.trips += 1
                self.hold = now + (ttl if limit is None else limit)
                self.before = (self.at, self.who)
                self.at = now
                self.who = "\n".join(self._ordered())
                self.pending = instance
        elif op == "clear":
            self.reports.pop(instance, None)
        elif op in ("confirm", "release") and self.pending == instance:
            flag = 1
            if op == "confirm":
                assert self.at is not None
                self.hold = self.at + ttl
            else:
                self.trips -= 1
                self.hold = 0.0
                self.at, self.who = self.before
            self.pending = None
        ago = -1.0 if self.at is None else float(int(now - self.at))
        live = [(i, float(int(self.reports[i] - now))) for i in self._ordered()]
        return flag, self.trips, ago, self.who, live

    def _ordered(self) -> list[str]:
        return sorted(self.reports, key=lambda i: (self.reports[i], i))


class QuorumBreaker:
    """A circuit breaker whose fleet-wide circuit opens only on a quorum of sick instances.

    Args:
        name: the circuit's name; the fleet circuit is the shared breaker of this name.
        config: when one instance is sick (its local circuit) and how the fleet circuit
            recovers (``recovery_timeout``, ``half_open_max_calls``, ``success_threshold``...).
        quorum: a :class:`QuorumConfig`, or just K.
        backend: a :class:`~aioresil.backends.redis.RedisBackend` (the fleet is every process
            using it) or a :class:`~aioresil.MemoryBackend` (quorum breakers of one process
            with different ``instance`` ids; useful in tests).
        clock: time source of both circuits (``aioresil.testing.FakeClock`` in tests).

    Example::

        breaker = QuorumBreaker("ledger", config=BreakerConfig(failure_threshold=5),
                                quorum=QuorumConfig(quorum=3), backend=redis_backend)
        async with breaker:     # CircuitOpenError if this instance's or the fleet's is open
            await ledger.post(entry)
    """

    def __init__(
        self,
        name: str,
        *,
        config: BreakerConfig | None = None,
        quorum: QuorumConfig | int = 2,
        backend: FleetBackend,
        clock: Clock | None = None,
    ) -> None:
        check_backend(backend, "QuorumBreaker")
        if isinstance(quorum, int) and not isinstance(quorum, bool):
            quorum = QuorumConfig(quorum=quorum)
        if not isinstance(quorum, QuorumConfig):
            raise TypeError(f"quorum must be a QuorumConfig or an int, got {quorum!r}")
        if config is None:
            config = BreakerConfig()
        elif not isinstance(config, BreakerConfig):
            raise TypeError(f"config must be a BreakerConfig, got {type(config).__name__}")
        self.name = name
        self.config = config
        self.quorum = quorum
        self.instance = quorum.instance if quorum.instance is not None else instance_id()
        self.backend = backend
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.local = CircuitBreaker(
            f"{name}@{self.instance}", config=config, backend=MemoryBackend(), clock=clock
        )
        self.fleet = CircuitBreaker(name, config=fleet_config(config), backend=backend, clock=clock)
        self._stack: ContextStack[bool] = ContextStack(f"aioresil.quorum.{name}")
        self._listeners: list[Callable[[QuorumReported], None]] = []
        self._reported = False
        self._ttl_ms = float(quorum.report_ttl) * 1000.0
        self._limit_ms = min(self._ttl_ms, UNCONFIRMED_TRIP_LIMIT * 1000.0)
        self._model: QuorumModel | None
        self._model, runner = backend.open_storage(Split("fleet-quorum", name, QuorumModel))
        self._runner = runner
        self._keys: list[str] = []
        if runner is not None:  # the breaker's hash tag: one slot with the fleet circuit
            self._keys = [runner.key("cb", name, "quorum"), runner.key("cb", name, "quorum-log")]

    # ------------------------------------------------------------------ guarding

    async def __aenter__(self) -> Self:
        fleet = self.fleet
        state = fleet.state
        entered = state is not _CLOSED and state is not _DISABLED
        if entered:
            await fleet.__aenter__()  # CircuitOpenError when the fleet circuit is open
        try:
            await self.local.__aenter__()
        except BaseException:
            if entered:
                await fleet.__aexit__(asyncio.CancelledError, None, None)  # give a trial back
            raise
        self._stack.push(entered)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entered = self._stack.pop(self)
        fleet, local = self.fleet, self.local
        if entered:
            if fleet.state is _HALF_OPEN:
                await fleet.__aexit__(exc_type, exc, tb)  # a trial: its outcome decides recovery
            else:
                # A normal permit (the view was only unknown): the fleet circuit counts no
                # outcome of ours; only the quorum opens it.
                await fleet.__aexit__(asyncio.CancelledError, None, None)
        before = local.state
        await local.__aexit__(exc_type, exc, tb)
        after = local.state
        if after is not before:
            if after is _OPEN:
                await self._report(sick=True)
            elif after is _CLOSED and self._reported:
                await self._report(sick=False)

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` under both circuits."""
        async with self:
            return await fn(*args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate an ``async def`` so every call runs under both circuits."""
        import functools
        import inspect

        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@QuorumBreaker decorates async functions; {fn!r} is not one")

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            async with self:
                return await fn(*args, **kwargs)

        return guarded

    # ------------------------------------------------------------------ the gate

    async def _step(self, op: str) -> _Reply:
        if self._model is not None:
            return self._model.step(
                op,
                memory_now_ms(self._clock),
                self.instance,
                self._ttl_ms,
                self.quorum.quorum,
                self._limit_ms,
            )
        assert self._runner is not None
        raw: list[Any] = await self._runner.run_script(
            load_script("quorum"),
            self._keys,
            [
                op,
                now_ms_arg(self._runner),
                self.instance,
                repr(self._ttl_ms),
                self.quorum.quorum,
                repr(self._limit_ms),
            ],
        )
        live = [(text(raw[i]), float(raw[i + 1])) for i in range(4, len(raw) - 1, 2)]
        return int(raw[0]), int(raw[1]), float(raw[2]), text(raw[3]), live

    async def _report(self, *, sick: bool) -> None:
        # Runs inside __aexit__ of the call that changed the local circuit: a store problem
        # must neither replace the caller's exception nor hide its result.
        try:
            tripped, _, _, _, live = await self._step("report" if sick else "clear")
        except AioresilError as error:
            _log.warning("quorum_report_failed", breaker=self.name, error=str(error))
            return
        self._reported = sick
        reporters = tuple(i for i, _ in live)
        if tripped:
            tripped = await self._trip()
        _log.info(
            "quorum_reported",
            breaker=self.name,
            instance=self.instance,
            sick=sick,
            reporters=list(reporters),
            quorum=self.quorum.quorum,
            tripped=bool(tripped),
        )
        if self._listeners:
            event = QuorumReported(
                self.name,
                self.instance,
                sick,
                reporters,
                self.quorum.quorum,
                bool(tripped),
                self._clock.time(),
            )
            for listener in tuple(self._listeners):
                try:
                    listener(event)
                except Exception:
                    _log.exception("listener_failed", breaker=self.name, listener=repr(listener))

    async def _trip(self) -> int:
        """Open the fleet circuit (one recorded failure: its threshold is 1), then confirm the
        trip in ``quorum.lua``, or release it: ``1`` when the fleet circuit is open.

        Why check and release: the trip is announced to this one caller, and opening the
        circuit takes more round trips that can fail (Redis unreachable, the fleet circuit
        half-open with its trial slots taken). A trip that silently opened nothing would hold
        off the next one for a whole ``report_ttl``; released, the next report with a quorum
        trips again. If neither confirm nor release gets through (or this process dies), the
        trip holds for ``min(report_ttl, 10 s)`` only.
        """
        fleet = self.fleet
        try:
            await fleet.__aenter__()
        except AioresilError:
            pass  # already open (checked below), or the store is gone
        else:
            try:
                await fleet.__aexit__(QuorumTrip, QuorumTrip(self.name), None)
            except AioresilError:
                pass  # checked below
        try:
            now = await fleet.stats()
        except AioresilError as error:
            opened, reason = False, str(error)
        else:
            opened = now.state is _OPEN or now.state is _FORCED_OPEN
            reason = f"the fleet circuit is {now.state.value}"
        try:
            await self._step("confirm" if opened else "release")
        except AioresilError as error:
            _log.warning("quorum_settle_failed", breaker=self.name, opened=opened, error=str(error))
        if not opened:
            _log.warning("quorum_trip_failed", breaker=self.name, reason=reason)
        return int(opened)

    # ------------------------------------------------------------------ state

    async def stats(self) -> QuorumStats:
        """Both circuits and the live reporters (a few round trips on Redis)."""
        _, trips, ago, who, live = await self._step("read")
        return QuorumStats(
            name=self.name,
            instance=self.instance,
            quorum=self.quorum.quorum,
            report_ttl=self.quorum.report_ttl,
            fleet=await self.fleet.stats(),
            local=await self.local.stats(),
            reporters={i: left / 1000.0 for i, left in live},
            trips=trips,
            last_trip_ago=None if ago < 0 else ago / 1000.0,
            last_trip_instances=tuple(who.split("\n")) if who else (),
        )

    def add_listener(self, listener: Callable[[QuorumReported], None]) -> None:
        """Call ``listener(event)`` for every :class:`QuorumReported` of this instance.

        Transitions of the circuits themselves come from ``breaker.fleet.add_listener`` and
        ``breaker.local.add_listener`` (the local one is named ``"<name>@<instance>"``).
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    async def reset(self) -> None:
        """Close both circuits and withdraw this instance's report."""
        await self.local.reset()
        await self.fleet.reset()
        await self._report(sick=False)

    def __repr__(self) -> str:
        return (
            f"<QuorumBreaker {self.name!r} fleet={self.fleet.state.value} "
            f"local={self.local.state.value} quorum={self.quorum.quorum}>"
        )


def fleet_config(config: BreakerConfig) -> BreakerConfig:
    """The fleet circuit's config: opened by one recorded :class:`QuorumTrip` only, recovering
    by the caller's rules (recovery timeout, trials, backoff)."""
    record = config.record_exceptions
    if not any(issubclass(QuorumTrip, kind) for kind in record):
        record = (*record, QuorumTrip)
    return dataclasses.replace(
        config,
        failure_threshold=1,
        failure_rate_threshold=None,
        window_size=None,
        window_duration=None,
        slow_call_duration=None,
        slow_call_rate_threshold=None,
        record_exceptions=record,
        ignore_exceptions=tuple(
            kind for kind in config.ignore_exceptions if not issubclass(QuorumTrip, kind)
        ),
    )
