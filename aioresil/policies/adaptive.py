"""Adaptive timeouts: the deadline follows the latency the upstream actually shows.

Why: a fixed timeout is set for the worst hour of the year, so on every other hour a call
that hangs (a dropped packet, a stuck upstream worker) is waited out for far longer than any
successful call ever takes. :class:`AdaptiveTimeout` sets the deadline to a high percentile of
recent *successful* call durations times a ``factor``, bounded by ``floor`` and ``ceiling``.

How it learns, and how a fleet shares it:

* Durations go into a **fixed-bucket sketch**: bucket ``i`` holds durations in
  ``(2^((i-1)/4), 2^(i/4)]`` ms (96 buckets, 1 ms to about 4.6 hours, each bucket 19 % wide),
  so a percentile is read as the upper edge of its bucket: never more than 19 % above the
  true value, never below it.
* The sketch is kept per epoch (``window / epochs`` seconds each) and only the last ``epochs``
  count, so a shift of the upstream's latency is fully learnt within one window.
* On Redis, each process sends its new counts every ``sync_interval`` seconds and receives the
  fleet's merged sketch in the same script call (``latency_sketch.lua``): a process that just
  started asks once, on its first call, and starts with the fleet's knowledge. Until the
  sketch holds ``min_samples`` durations (cold start) the configured ``seconds`` apply.
* A call cut by the deadline is *not* a latency sample: a black-holed request says nothing
  about how fast the upstream answers, and counting it at the deadline would drag a high
  percentile up to the deadline whenever more than ``1 - percentile`` of requests hang (the
  deadline would then double until the ceiling). Instead, when more than ``expand_above`` of
  the calls since the last sync were cut, the upstream has most likely slowed down: the
  deadline is multiplied by ``factor`` for the next period (again at each sync while it
  lasts), so it climbs back within a few syncs and the now slower successes teach the sketch
  the new latency; the boost then decays by ``factor`` per calm sync. Black holes below
  ``expand_above`` leave the deadline alone.

A cut needs a witness when the traffic can give one. A deadline learnt from the past is wrong
for a while after the upstream slows down, and a call cut then is a failure the fixed timeout
would not have caused. So while other calls are in flight, a call's cut is *held* (its deadline
moves to the ceiling) until a witness answers: a call that started after it, or any call
answering once it has waited past its learnt deadline. The witness proves the upstream answers,
and the held call's deadline becomes ``max(learnt deadline, factor x d)`` from its start, never
past the ceiling (at once if that is past), where ``d`` is the slowest answer of the last one
to two seconds, the witness's included, and a slower answer later raises it again (with jitter,
the first answers after a latency step are the fast ones: they must not cut a slow but healthy
call). A black-holed call among calls that answer is overtaken within one latency and cut at
its learnt deadline as before; calls slowed down together answer slowly together, so none is
cut and their durations teach the sketch the new latency. A witness has lived through any
event-loop stall too. A lone call (nothing else in flight, or the rest answered before its
learnt deadline and left it alone) has no witness to wait for: its learnt deadline cuts as
before, and the shift rule above limits the damage. A failure or a cut is never a witness.
``LatencySketch.saved`` counts the calls that answered after their learnt deadline: the
failures a learnt deadline alone would have added.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..backends.base import BreakerBackend, ScriptRunner
from ..backends.keys import encode_name
from ..backends.memory import MemoryBackend
from ..backends.scripts import load_script
from ..clock import Clock, SystemClock
from ..exceptions import AioresilError

__all__ = [
    "BUCKETS",
    "AdaptiveTimeout",
    "Flight",
    "LatencySketch",
    "SketchModel",
    "bucket_of",
    "upper_ms",
]

_log = structlog.get_logger("aioresil")

BUCKETS = 96
"""Buckets of the sketch; the last one holds everything above ~4.6 hours."""

_SLOWEST_PERIOD = 1.0
"""Seconds per period of "the slowest recent answer" a witness vouches for (this and the last)."""

_SHIFT_CALLS = 10
"""Calls a period needs before its share of cut calls is read as a latency shift."""


def bucket_of(ms: float) -> int:
    """The sketch bucket of a duration in milliseconds.

    >>> bucket_of(1.0), bucket_of(2.0), bucket_of(100.0)
    (0, 4, 27)
    """
    if not ms > 1.0:
        return 0
    return min(BUCKETS - 1, max(0, math.ceil(4.0 * math.log2(ms) - 1e-9)))


def upper_ms(bucket: int) -> float:
    """The upper edge of a bucket, in milliseconds (what a percentile reads as)."""
    return float(2.0 ** (bucket / 4.0))


@dataclass(slots=True)
class SketchModel:
    """``latency_sketch.lua`` in Python: the memory store and the script's reference model."""

    counts: dict[tuple[int, int], int] = field(default_factory=dict)

    def step(
        self, now_ms: float, width_ms: float, epochs: int, deltas: dict[int, int]
    ) -> dict[int, int]:
        current = math.floor(now_ms / width_ms)
        for bucket, count in deltas.items():
            self.counts[(current, bucket)] = self.counts.get((current, bucket), 0) + count
        merged: dict[int, int] = {}
        for key in list(self.counts):
            epoch, bucket = key
            if epoch <= current - epochs:
                del self.counts[key]
            else:
                merged[bucket] = merged.get(bucket, 0) + self.counts[key]
        return dict(sorted(merged.items()))


def _positive(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveTimeout:
    """How a :class:`~aioresil.Timeout` learns its deadline (``Timeout(2.0, adaptive=...)``).

    The deadline is ``clamp(p(percentile) * factor, floor, ceiling)`` of recent successful
    call durations; the Timeout's own ``seconds`` apply until ``min_samples`` are known.

    Attributes:
        percentile: which percentile of successful durations (0.5 < p < 1).
        factor: head room above it (>= 1).
        floor: the shortest deadline ever used (seconds).
        ceiling: the longest; the Timeout's ``seconds`` when ``None`` (adaptive only shortens
            what you configured).
        min_samples: durations the sketch must hold before it is trusted.
        window: seconds of history that count (in ``epochs`` steps).
        epochs: steps of the window.
        sync_interval: seconds between exchanges with the fleet's sketch.
        expand_above: fraction of timed-out calls in a sync period above which the deadline
            grows by ``factor`` (a latency shift); below half of it a boost decays.
        backend: a ``RedisBackend`` shares the sketch with every process using ``name``; a
            ``MemoryBackend`` shares it in this process; ``None`` keeps it private.
        name: the sketch's name (the Timeout's name by default).

    Example::

        Timeout(2.0, adaptive=AdaptiveTimeout(percentile=0.99, factor=2, floor=0.05,
                                              backend=redis_backend, name="pricing-api"))
    """

    percentile: float = 0.99
    factor: float = 2.0
    floor: float = 0.01
    ceiling: float | None = None
    min_samples: int = 100
    window: float = 60.0
    epochs: int = 6
    sync_interval: float = 1.0
    expand_above: float = 0.2
    backend: Any = None
    name: str | None = None

    def __post_init__(self) -> None:
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.5 < p < 1:
            raise ValueError(f"percentile must be a number with 0.5 < p < 1, got {p!r}")
        _positive("factor", self.factor)
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        _positive("floor", self.floor)
        _positive("ceiling", self.ceiling, optional=True)
        if self.ceiling is not None and self.ceiling < self.floor:
            raise ValueError(f"ceiling ({self.ceiling}) must be >= floor ({self.floor})")
        n = self.min_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"min_samples must be an int >= 1, got {n!r}")
        _positive("window", self.window)
        e = self.epochs
        if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= 60:
            raise ValueError(f"epochs must be an int in 1..60, got {e!r}")
        _positive("sync_interval", self.sync_interval)
        x = self.expand_above
        if isinstance(x, bool) or not isinstance(x, int | float) or not 0 < x < 1:
            raise ValueError(f"expand_above must be a fraction with 0 < x < 1, got {x!r}")
        backend = self.backend
        if backend is not None and not isinstance(backend, BreakerBackend):
            raise TypeError(f"backend must be a MemoryBackend or a RedisBackend, got {backend!r}")
        if self.name is not None:
            encode_name(self.name)


class _SketchFactory:
    """``backend.open_storage`` picks: a shared in-process sketch, or Redis scripts."""

    kind = "latency-sketch"

    def __init__(self, name: str) -> None:
        self.name = name

    def in_process(self, shared: dict[str, Any]) -> tuple[SketchModel, None]:
        if self.name not in shared:
            shared[self.name] = SketchModel()
        model: SketchModel = shared[self.name]
        return model, None

    def on_scripts(self, runner: ScriptRunner) -> tuple[None, ScriptRunner]:
        return None, runner


class Flight:
    """One call in flight under an adaptive deadline (see "a cut needs a witness").

    ``scope`` is anything with a settable ``deadline`` (an anyio ``CancelScope``)."""

    __slots__ = ("done", "held", "limit", "queued", "scope", "seq", "started")

    def __init__(self, seq: int, scope: Any, started: float, limit: float) -> None:
        self.seq = seq
        self.scope = scope
        self.started = started
        self.limit = limit
        self.done = False
        self.held = False  # the cut waits for a witness (deadline at the ceiling)
        self.queued = False  # in the sketch's list of held calls


class LatencySketch:
    """One process's view of a (possibly fleet-wide) latency sketch, and the deadline it gives.

    Local durations count at once; the fleet's arrive with each sync. ``deadline(default)``
    is cheap (a cached number, recomputed after each sync or every 64 local samples).
    """

    def __init__(
        self, settings: AdaptiveTimeout, name: str, default: float, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.name = settings.name or name
        self.default = default
        self.ceiling = settings.ceiling if settings.ceiling is not None else default
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._width_ms = settings.window * 1000.0 / settings.epochs
        backend = settings.backend if settings.backend is not None else MemoryBackend()
        self._backend = backend
        self._model: SketchModel | None
        self._runner: ScriptRunner | None
        self._model, self._runner = backend.open_storage(_SketchFactory(self.name))
        self._key = "" if self._runner is None else self._runner.key("lat", self.name, "sketch")
        self._fleet: dict[int, int] = {}  # the merged sketch as of the last sync
        self._local: dict[int, int] = {}  # samples since that sync (also sent with the next)
        self._last_sync = -math.inf
        self._sync_task: asyncio.Task[None] | None = None
        self._loaded = False
        self._since_compute = 0
        self._deadline = default
        self._boost = 1.0
        self._period_calls = 0
        self._period_timeouts = 0
        self.samples = 0
        self.syncs = 0
        # Witnesses: calls in flight, the one alone (if so) and the held ones in start order.
        self._seq = 0
        self._live = 0
        self._lone: Flight | None = None
        self._held: deque[Flight] = deque()
        self.saved = 0  # calls that answered after their learnt deadline (held, not cut)
        self._slow_since = -math.inf  # the slowest answer of this period and the last one
        self._slowest_now = 0.0
        self._slowest_before = 0.0
        self._reach = 0.0  # factor x that slowest answer, as last used
        self._vouched: deque[Flight] = deque()  # calls a witness set the deadline of

    # ------------------------------------------------------------------ witnesses

    def begin(self, scope: Any, started: float, limit: float) -> Flight:
        """A call starts: alone, its learnt deadline stands (``started + limit``); with company
        in flight, its cut is held until a witness (see the module doc). Sets
        ``scope.deadline`` either way."""
        self._seq += 1
        flight = Flight(self._seq, scope, started, limit)
        self._live += 1
        if self._live == 1:
            self._lone = flight
            scope.deadline = started + limit
            return flight
        lone = self._lone
        if lone is not None:  # it was alone; the new call can witness it now
            self._lone = None
            self._hold(lone)
        self._hold(flight)
        return flight

    def _hold(self, flight: Flight) -> None:
        flight.held = True
        flight.scope.deadline = flight.started + max(flight.limit, self.ceiling)
        if not flight.queued:
            flight.queued = True
            self._held.append(flight)

    def end(self, flight: Flight) -> None:
        """The call is over without answering (failed, cut, cancelled): no witness; idempotent."""
        if not flight.done:
            flight.done = True
            self._release(flight)

    def succeeded(self, flight: Flight, seconds: float) -> None:
        """The call answered after ``seconds``: a sample, and a witness for the held calls
        that started before it or have waited past their learnt deadline."""
        if flight.done:
            return
        flight.done = True
        if seconds > flight.limit:
            self.saved += 1
        held = self._held
        now = flight.started + seconds
        if now - self._slow_since >= _SLOWEST_PERIOD:  # rotate: keep this and the last period
            self._slowest_before = (
                self._slowest_now if now - self._slow_since < 2 * _SLOWEST_PERIOD else 0.0
            )
            self._slowest_now = 0.0
            self._slow_since = now
        if seconds > self._slowest_now:
            self._slowest_now = seconds
        # Never past the ceiling: a held call waits no longer than it would without a witness.
        reach = min(
            max(self._slowest_now, self._slowest_before) * self.settings.factor, self.ceiling
        )
        vouched = self._vouched
        if reach > self._reach:
            # A slower answer than any recent one: calls already vouched for get its reach too
            # (the first answers after a latency step are the fast ones).
            while vouched and vouched[0].done:
                vouched.popleft()
            for other in vouched:
                if not other.done and other.scope.deadline < other.started + reach:
                    other.scope.deadline = other.started + reach
        self._reach = reach
        while held:
            other = held[0]
            if other.done:
                held.popleft()
            elif other.seq < flight.seq or other.started + other.limit <= now:
                # Overtaken by a later call, or still waiting after its learnt deadline while
                # this one answered: the upstream answers.
                held.popleft()
                other.queued = other.held = False
                other.scope.deadline = other.started + max(other.limit, reach)
                vouched.append(other)
            else:
                break  # later calls within their deadline: the next answer will tell
        self._release(flight)
        self.observe(seconds)

    def _release(self, flight: Flight) -> None:
        self._live -= 1
        if self._lone is flight:
            self._lone = None
        held = self._held
        while held and held[0].done:  # bounded: flights started within the last ceiling
            held.popleft()
        vouched = self._vouched
        while vouched and vouched[0].done:
            vouched.popleft()
        if self._live == 1 and held and held[0].held:
            # Alone again with its cut held: no one left to witness it, so the learnt deadline
            # stands again (a later call holds it anew).
            last = held[0]
            last.held = False
            self._lone = last
            last.scope.deadline = last.started + last.limit

    def held_in_flight(self) -> int:
        """Calls in flight whose cut is held now (waiting for a witness)."""
        return sum(1 for flight in self._held if flight.held and not flight.done)

    # ------------------------------------------------------------------ recording

    def observe(self, seconds: float) -> None:
        """Count one successful call's duration."""
        bucket = bucket_of(seconds * 1000.0)
        self._local[bucket] = self._local.get(bucket, 0) + 1
        self._period_calls += 1
        self._since_compute += 1
        if self._since_compute >= 64:
            self._compute()
        self._maybe_sync()

    def timed_out(self) -> None:
        """Count one call cut by the deadline (not a latency sample; see the module doc)."""
        self._period_calls += 1
        self._period_timeouts += 1
        if (
            self._period_calls >= _SHIFT_CALLS
            and self._period_timeouts > self.settings.expand_above * self._period_calls
        ):
            # A shift shows within a few calls: react now, not at the next sync.
            self._adjust_boost()
            self._compute()
        self._maybe_sync()

    def _adjust_boost(self) -> None:
        calls, cut = self._period_calls, self._period_timeouts
        if calls < _SHIFT_CALLS:
            return  # too few calls to tell a shift from bad luck: keep counting
        self._period_calls = self._period_timeouts = 0
        settings = self.settings
        if cut > settings.expand_above * calls:
            self._boost *= settings.factor
        elif cut <= settings.expand_above * calls / 2 and self._boost > 1.0:
            self._boost = max(1.0, self._boost / settings.factor)

    def deadline(self) -> float:
        """The deadline to use now (the default until ``min_samples`` are known)."""
        return self._deadline

    def _compute(self) -> None:
        self._since_compute = 0
        merged = dict(self._fleet)
        for bucket, count in self._local.items():
            merged[bucket] = merged.get(bucket, 0) + count
        total = sum(merged.values())
        self.samples = total
        settings = self.settings
        if total < settings.min_samples:
            self._deadline = self.default
            return
        rank = settings.percentile * total
        seen = 0
        chosen = BUCKETS - 1
        for bucket in sorted(merged):
            seen += merged[bucket]
            if seen >= rank:
                chosen = bucket
                break
        seconds = upper_ms(chosen) / 1000.0 * settings.factor * self._boost
        self._deadline = min(max(seconds, settings.floor), self.ceiling)
        if self._deadline >= self.ceiling:
            # No point growing past the ceiling: the boost resumes from there when calm.
            self._boost = min(self._boost, max(1.0, self.ceiling / (seconds / self._boost)))

    # ------------------------------------------------------------------ the fleet

    async def load(self) -> None:
        """First contact: read the fleet's sketch (a process starts with what it knows)."""
        if not self._loaded:
            self._loaded = True
            await self._sync_quietly()

    def _maybe_sync(self) -> None:
        now = self._clock.monotonic()
        if now - self._last_sync < self.settings.sync_interval:
            return
        if self._sync_task is not None and not self._sync_task.done():
            return
        self._last_sync = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sync_task = loop.create_task(self._sync_quietly())
        track = getattr(self._backend, "track", None)
        if track is not None:
            track(self._sync_task)

    async def _sync_quietly(self) -> None:
        try:
            await self.sync()
        except AioresilError as error:
            _log.warning("latency_sketch_sync_failed", sketch=self.name, error=str(error))

    async def sync(self) -> None:
        """Send the local counts and adopt the fleet's merged sketch (one round trip)."""
        self._last_sync = self._clock.monotonic()
        deltas, self._local = self._local, {}
        try:
            merged = await self._exchange(deltas)
        except BaseException:
            for bucket, count in deltas.items():  # nothing lost: sent with the next sync
                self._local[bucket] = self._local.get(bucket, 0) + count
            raise
        self._fleet = merged
        self.syncs += 1
        self._adjust_boost()
        self._compute()

    async def _exchange(self, deltas: dict[int, int]) -> dict[int, int]:
        settings = self.settings
        if self._model is not None:
            now_ms = self._clock.monotonic() * 1000.0
            return self._model.step(now_ms, self._width_ms, settings.epochs, deltas)
        runner = self._runner
        assert runner is not None
        clock = runner.clock
        now_arg = "" if clock is None else repr(clock.monotonic() * 1000.0)
        encoded = ",".join(f"{b}:{c}" for b, c in sorted(deltas.items()))
        reply: list[Any] = await runner.run_script(
            load_script("latency_sketch"),
            [self._key],
            [now_arg, repr(self._width_ms), settings.epochs, encoded],
        )
        return {int(reply[i]): int(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}
