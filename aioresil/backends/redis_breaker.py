"""A breaker whose state lives in Redis and is shared by every process using its name.

How a call costs what it costs:

* **Acquire** is answered from the *local view* while it says CLOSED or DISABLED (zero round
  trips), and while it says OPEN and the recovery timeout has not elapsed (zero round trips,
  the rejection is counted locally and sent with the next script call). Otherwise (HALF_OPEN,
  or OPEN with the timeout elapsed) it is one ``breaker.lua`` call that grants or refuses a
  trial lease.
* **Record** is one ``breaker.lua`` call in ``"strict"`` mode, awaited before the guarded
  block returns. In ``"batched"`` mode outcomes of normal calls are kept in order locally and
  flushed in one script call every ``batch_interval`` seconds (at once after a failure), so
  the call itself makes no round trip; trial outcomes are always strict.
* **The local view** is updated from every script reply and from a pub/sub message every
  script publishes on a transition, so when one process opens the circuit the others stop
  sending calls within about a millisecond instead of at their next poll.

When Redis cannot be reached the config's ``on_backend_error`` decides: ``"fail_open"`` judges
calls with a private in-memory breaker (same config) until a background ping succeeds;
``"fail_closed"`` refuses calls with :class:`~aioresil.exceptions.BackendUnavailableError`.
Each switch emits :class:`~aioresil.events.BackendFailover` /
:class:`~aioresil.events.BackendRecovered` and a structlog line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import structlog

from ..core import machine
from ..core.config import FINGERPRINT_LENGTH, BreakerConfig, decode_rules, encode_rules
from ..core.machine import BreakerRecord, Outcome, Permit, Rejection, Transition
from ..core.states import CircuitState, Trigger
from ..core.window import CountWindow, TimeWindow
from ..events import BackendFailover, BackendRecovered, BreakerConfigConflict, BreakerEvent
from ..exceptions import BackendError, BackendUnavailableError, IllegalTransitionError
from .base import NO_RUN, BreakerReading, SuccessRun, TransitionCallback
from .breaker_schema import (
    HALF_OPEN_CODE,
    READ_CONFIG,
    READ_LEASES,
    READ_ROW,
    READ_WINDOW,
    ROW_KEY,
    STATES_BY_CODE,
    breaker_script,
)
from .keys import encode_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..clock import Clock
    from .scripts import LuaScript


class BreakerHost(Protocol):
    """What a :class:`RedisBreakerHandle` needs from its :class:`~aioresil.RedisBackend`.

    Why a protocol: ``redis.py`` creates the handles, so this module must not import it back
    (no import cycles; ``tests/face/test_layering.py``).
    """

    clock: Clock | None
    events_channel: str

    def key(self, kind: str, name: str, part: str) -> str: ...

    async def run_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[str | int | float | bytes]
    ) -> Any: ...

    def ensure_listener(self) -> None: ...

    def track(self, task: asyncio.Task[None]) -> None: ...

    async def ping(self) -> None: ...

    async def read_breakers(
        self, handles: Sequence[RedisBreakerHandle], now: float = 0.0, wall: float = 0.0
    ) -> list[BreakerReading]: ...

    async def read_views(
        self, handles: Sequence[RedisBreakerHandle]
    ) -> list[tuple[str, int, int]]: ...


__all__ = ["RedisBreakerHandle", "binding_argument"]

_log = structlog.get_logger("aioresil")

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
DISABLED = CircuitState.DISABLED
FORCED_OPEN = CircuitState.FORCED_OPEN
HALF_OPEN = CircuitState.HALF_OPEN

RECONNECT_INTERVAL = 1.0
# Rejections counted locally while OPEN reach Redis at most this long after the first one,
# even when no other script call carries them: the fleet's view (``aioresil serve``, the
# dashboard) would otherwise show 0 rejected for as long as the circuit stays open.
REJECTION_FLUSH_INTERVAL = 1.0
"""Seconds between pings while a fail-open breaker runs on its local fallback."""

EventSink = Callable[[BreakerEvent], None]

_random = random.SystemRandom()

_KNOWN_CONFIGS = 8
"""How many decoded stored configs a handle keeps by fingerprint (see ``record_from``)."""
_NO_FINGERPRINT = b" " * FINGERPRINT_LENGTH
"""The fingerprint of a row whose hash holds no config (a breaker no script has written yet):
read under the handle's own config."""
_new_record = BreakerRecord.__new__


class _Reply(NamedTuple):
    """What ``breaker.lua`` answered (see its header)."""

    code: int
    token: int
    state: str
    generation: int
    retry_after_us: int


_NO_BIND = frozenset({"operator", "release"})
_OPS = {op: op.encode() for op in ("success", "acquire", "record", "batch", "operator", "release")}
"""Script operations that never store this process's config (see ``_run``)."""

_FAST = _Reply(1, 0, "closed", 0, -1)
"""What the script's hot path means: a success applied in CLOSED, nothing else changed."""


def _us(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if math.isinf(seconds):
        return "1e300"
    return str(round(seconds * 1_000_000))


def binding_argument(config: BreakerConfig, channel: str, encoded_name: str) -> bytes:
    """ARGV[4] of ``breaker.lua`` on a bind: the config items, the channel and the name.

    Encoded once per handle: redis-py packs every argument in Python on every call.
    """
    return ",".join([encode_rules(config), channel, encoded_name]).encode()


def _new_token() -> int:
    """A trial token chosen by the client: unique enough (52 random bits), exact in Lua."""
    return _random.randrange(1 << 40, 1 << 52)


class RedisBreakerHandle:
    """One breaker's state in Redis, with a local view kept fresh by replies and pub/sub.

    Slotted: a registry read visits 1,000 handles, and their attributes packed in slots are
    read faster than from 1,000 instance dicts (about 0.2 ms of a 1,000-breaker read).
    """

    __slots__ = (
        "_batched",
        "_bind_arg",
        "_binding",
        "_buffer",
        "_callbacks",
        "_conflicts_seen",
        "_decoded",
        "_fallback",
        "_fingerprint_bytes",
        "_flush_handle",
        "_flush_lock",
        "_flush_task",
        "_known_configs",
        "_last_probe",
        "_missed",
        "_mono",
        "_outage_logged",
        "_pending_rejections",
        "_probe_task",
        "_probing",
        "_rejection_handle",
        "_sinks",
        "_success_op",
        "_successes",
        "backend",
        "config",
        "encoded",
        "fingerprint",
        "hub",
        "keys",
        "may_flush",
        "name",
        "read_ask",
        "read_fp",
        "success_run",
        "view",
    )

    authoritative = False

    def __init__(self, backend: BreakerHost, name: str, config: BreakerConfig) -> None:
        self.backend = backend
        self.name = name
        self.config = config
        self.encoded = encode_name(name)
        self.keys = [
            backend.key("cb", name, "state"),
            backend.key("cb", name, "trials"),
            backend.key("cb", name, "window"),
            backend.key("cb", name, ROW_KEY),
        ]
        # The config travels once, on this handle's first call (its bind; again only if Redis
        # lost it): later calls name it by fingerprint and the script reads the stored one.
        self.fingerprint = config.fingerprint
        self._binding = binding_argument(config, backend.events_channel, self.encoded)
        self._bind_arg: bytes = self._binding
        self._fingerprint_bytes = self.fingerprint.encode()
        self._conflicts_seen: set[tuple[str, str]] = set()
        # A success needs only the fast op when the rules keep no window (see breaker.lua).
        self._success_op = "record" if config.has_rate_rule else "success"
        self.hub: Any = None  # the breaker layer's per-circuit bookkeeping (see breaker.py)
        self._decoded: tuple[bytes, BreakerConfig] | None = None
        # Every stored config decoded (by fingerprint, a few at most): a row that left its
        # config out is read under the config of ITS fingerprint. Not merely the one known
        # last: a concurrent read may have decoded a newer config (rebound meanwhile) before
        # this row is read.
        self._known_configs: dict[bytes, BreakerConfig] = {}
        self.read_ask = READ_CONFIG
        """What the next ``breaker_read.lua`` call asks for this breaker (a byte of
        :data:`~aioresil.backends.breaker_schema.READ_ROW` ...): everything until a read
        told what the breaker needs (see :meth:`learn_ask`)."""
        self.read_fp: bytes | None = None
        """The fingerprint a row must carry for a read that asked for the row alone to be
        complete (the config of :attr:`read_ask` = ``READ_ROW``); ``None`` otherwise."""
        # Unknown until the first reply: generation 0 (every reply is newer) and OPEN with an
        # elapsed timeout, so the first call asks Redis instead of trusting a guess.
        self.view = BreakerRecord(config)
        self.view.generation = 0
        self.view.state = OPEN
        self._callbacks: list[TransitionCallback] = []
        self._sinks: list[EventSink] = []
        self._pending_rejections = 0
        self._rejection_handle: asyncio.TimerHandle | None = None
        self._batched = config.recording == "batched"
        # (generation, outcome, duration_us, repeats) in the order the calls ended; the
        # newest successes are counted in a SuccessRun first, then closed into the buffer.
        self._buffer: list[tuple[int, int, int, int]] = []
        self._successes = SuccessRun()
        self.success_run = self._successes if self._batched else None
        self._flush_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_lock: asyncio.Lock | None = None  # created on the running loop
        self.may_flush = self._batched
        """Whether :attr:`needs_flush` can be true: a batched breaker, or one that flushed
        (its lock exists). A plain attribute, read for every breaker of a registry read
        before the property is (1,000 property calls cost 0.1 ms of a 5 ms budget)."""
        self._fallback: BreakerRecord | None = None
        self._last_probe = 0.0
        self._probe_task: asyncio.Task[None] | None = None
        self._probing = False  # a probe's read of the view is in flight (see _probe)
        self._missed: tuple[str, int, int, float] | None = None
        """The newest reading :meth:`apply_view` was offered on the fallback while a probe's
        read was in flight: ``(state, generation, retry_after_us, when received)``."""
        self._outage_logged = False
        clock = backend.clock
        self._mono: Callable[[], float] = clock.monotonic if clock is not None else time.monotonic

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, callback: TransitionCallback) -> None:
        self._callbacks.append(callback)

    def subscribe_events(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def _emit(self, transition: Transition, retry_after: float | None) -> None:
        for callback in self._callbacks:
            callback(transition, retry_after)

    def _emit_event(self, event: BreakerEvent) -> None:
        for sink in self._sinks:
            sink(event)

    # ------------------------------------------------------------------ the local view

    def apply_view(self, state: str, generation: int, retry_after_us: int) -> None:
        """Adopt a state seen in Redis if it is at least as new as the one we hold.

        On the fallback the view is the fallback's: the reading is dropped, but kept (the
        newest one) while a probe's read is in flight, for the probe to apply after its own.
        """
        view = self.view
        if self._fallback is not None:
            if self._probing:
                missed = self._missed
                if missed is None or generation >= missed[1]:
                    self._missed = (state, generation, retry_after_us, self._mono())
            return
        if generation < view.generation:
            return
        view.state = CircuitState(state)
        view.generation = generation
        if view.state is OPEN and retry_after_us >= 0:
            view.open_until = self._mono() + retry_after_us / 1e6
        elif view.state is not OPEN:
            view.open_until = 0.0

    def apply_read_view(
        self, state: str, generation: int, retry_after_us: int, *, asked_at: int
    ) -> None:
        """Apply a view read from Redis (the listener's resync after it (re)subscribed), even
        an OLDER one when Redis lost transitions; ``asked_at`` is ``view.generation`` when the
        read was sent.

        Why older: after a failover the new master may lack the last transitions the old one
        made (breakers do not wait for replicas). Redis is the shared truth the fleet now
        decides on, so a view ahead of it would be a private fork.

        Why only older than ``asked_at``, not older than the view now: a script reply or a
        pub/sub message applied while the read was in flight may be newer than the read
        (Redis ran that script after the read). Rolling it back would turn, e.g., a trip this
        process just applied back into CLOSED while Redis holds OPEN, and the hot path would
        grant calls through the open circuit. Only a generation below what the view held
        BEFORE the read was sent proves a loss: on one master a read sees every transition
        whose reply or message arrived before it was sent. Anything else is applied as every
        reply is, if it is not older than the view.
        """
        view = self.view
        if self._fallback is None and generation < asked_at:
            _log.warning(
                "circuit_view_ahead_of_redis",
                breaker=self.name,
                local_generation=view.generation,
                redis_generation=generation,
            )
            view.generation = 0  # adopt Redis's view (no await in between)
        self.apply_view(state, generation, retry_after_us)

    def _apply_reply(self, reply: list[Any], *, bound: bool = True) -> _Reply:
        try:
            return self._parse_reply(reply, bound)
        except (ValueError, IndexError, TypeError, KeyError) as exc:
            raise BackendError(
                f"breaker {self.name!r}: unexpected reply from breaker.lua ({exc!r})"
            ) from exc

    def _parse_reply(self, reply: list[Any], bound: bool) -> _Reply:
        code, state, generation, retry_after_us = (
            int(reply[0]),
            _text(reply[1]),
            int(reply[2]),
            int(reply[3]),
        )
        token, old, trigger, corrupt = int(reply[4]), _text(reply[5]), _text(reply[6]), reply[7]
        if code < 0:
            return _Reply(code, 0, state, generation, retry_after_us)
        if bound:
            self._bind_arg = b""  # our config is stored: from now on it is named by fingerprint
            in_force, replaced = _text(reply[8]), _text(reply[9])
            if in_force != self.fingerprint or replaced:
                self._conflict(in_force, replaced, len(reply) > 10 and int(reply[10]) == 1)
        self.apply_view(state, generation, retry_after_us)
        if int(corrupt):
            _log.error(
                "circuit_state_corrupt_reset",
                breaker=self.name,
                detail="stored state was unreadable or from another version; reset",
            )
        if trigger:
            retry_after = retry_after_us / 1e6 if retry_after_us >= 0 else None
            self._emit(
                Transition(CircuitState(old), CircuitState(state), Trigger(trigger)), retry_after
            )
        return _Reply(code, token, state, generation, retry_after_us)

    def _conflict(self, in_force: str, replaced: str, window_restarted: bool = False) -> None:
        """Another process bound this name with other rules: say so once per config pair.

        ``window_restarted``: this process's bind changed the window's shape, so
        ``breaker.lua`` cleared the window (its outcomes were measured under other rules).
        """
        key = (in_force, replaced)
        if key in self._conflicts_seen:
            return
        self._conflicts_seen.add(key)
        _log.warning(
            "circuit_config_conflict",
            breaker=self.name,
            ours=self.fingerprint,
            in_force=in_force,
            replaced=replaced or None,
            window_restarted=window_restarted,
            rule="the newest process to bind a name wins; every process runs under its config",
        )
        self._emit_event(
            BreakerConfigConflict(
                self.name, time.time(), self.fingerprint, in_force, replaced, window_restarted
            )
        )

    # ------------------------------------------------------------------ scripts

    def _now_arg(self) -> bytes | str:
        clock = self.backend.clock
        return b"" if clock is None else _us(clock.monotonic())

    async def _run(self, op: str, *extra: str | int) -> _Reply:
        """One ``breaker.lua`` call; ``None`` when the hot path answered (nothing changed)."""
        self.backend.ensure_listener()
        rejections, self._pending_rejections = self._pending_rejections, 0
        script = breaker_script()
        # Only guarded calls bind: an operator action (the CLI, the dashboard, an admin
        # endpoint built with default settings) must never replace the rules in force.
        binds = op not in _NO_BIND
        bind_arg = self._bind_arg if binds else b""
        try:
            for _ in range(2):
                # Constant arguments go as bytes: redis-py passes bytes through untouched.
                reply = await self.backend.run_script(
                    script,
                    self.keys,
                    [
                        _OPS.get(op, op),
                        self._now_arg(),
                        self._fingerprint_bytes,
                        bind_arg,
                        rejections or b"0",
                        *extra,
                    ],
                )
                if reply == 1 or int(reply[0]) >= 0:
                    break
                bind_arg = self._binding  # nothing stored (new, or Redis lost it): bind
        except BackendError as error:
            self._pending_rejections += rejections  # not applied: count them next time
            if "AIORESIL_ILLEGAL" in str(error):
                raise IllegalTransitionError(f"breaker {self.name!r}: {error}") from error
            raise
        except BaseException:  # not sent (error or cancellation): count them next time
            self._pending_rejections += rejections
            raise
        if self._outage_logged and self._fallback is None:
            self._outage_logged = False  # a fail-closed outage ended
            _log.info("circuit_backend_recovered", breaker=self.name)
            self._emit_event(BackendRecovered(self.name, time.time()))
        if reply == 1:
            return _FAST
        return self._apply_reply(reply, bound=binds or bool(bind_arg))

    # ------------------------------------------------------------------ acquire

    def acquire_local(self, now: float) -> Permit | Rejection | None:
        fallback = self._fallback
        if fallback is not None:
            self._maybe_probe()
            return self._fallback_acquire(fallback, now)
        view = self.view
        state = view.state
        if state is CLOSED or state is DISABLED:
            return Permit(view.generation)
        if state is OPEN:
            # open_until is in this handle's time base (set from a server-side duration),
            # which need not be the breaker's clock: compare in ours.
            local_now = self._mono()
            if local_now < view.open_until:
                self._pending_rejections += 1
                if self._rejection_handle is None:
                    self._schedule_rejection_flush()
                return Rejection(OPEN, view.open_until - local_now)
        if state is FORCED_OPEN:
            self._pending_rejections += 1
            if self._rejection_handle is None:
                self._schedule_rejection_flush()
            return Rejection(FORCED_OPEN, None)
        return None

    async def acquire_remote(self, now: float) -> Permit | Rejection:
        # The client picks the trial token, so a grant whose reply this task never reads
        # (cancelled while waiting, or the connection dropped) can still be given back.
        token = _new_token()
        try:
            reply = await self._run("acquire", token)
        except BackendUnavailableError as error:
            self._release_in_background(token)
            self._outage(error, now)
            if self._fallback is None:
                raise  # fail-closed
            return self._fallback_acquire(self._fallback, now)
        except BaseException:
            self._release_in_background(token)
            raise
        if reply.code:
            return Permit(reply.generation, reply.token)
        if reply.state == "open":
            return Rejection(OPEN, reply.retry_after_us / 1e6)
        return Rejection(CircuitState(reply.state), None)

    def _release_in_background(self, token: int) -> None:
        """Give back trial ``token`` whatever happened to its acquire (a task of its own, so
        the caller's cancellation cannot cancel it; the backend awaits it on close)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - no loop: nothing can be sent anyway
            return
        task = loop.create_task(self._release(token))
        self.backend.track(task)

    async def _release(self, token: int) -> None:
        with contextlib.suppress(BackendError):
            await self._run("release", str(token))

    # ------------------------------------------------------------------ record

    def success_fast(self, generation: int, now: float, duration: float) -> Awaitable[None] | None:
        if self._batched and generation > 0 and self._fallback is None:
            # The batched hot path: counted into the open run of successes (the breaker does
            # that inline while the run is of its permit's generation), or buffered.
            run = self._successes
            if not duration:
                if generation == run.generation:
                    run.count += 1
                    return None
                self._close_run()
                run.generation, run.count = generation, 1  # the breaker counts the next ones
            else:
                self._close_run()
                self._buffer.append((generation, 0, round(duration * 1e6), 1))
            if self._flush_handle is None:
                self._schedule_flush(soon=False)
            return None
        if self._fallback is not None or generation < 0:
            return self.record(Permit(generation), Outcome.SUCCESS, now, duration)
        if self._batched:
            return self.record(Permit(generation), Outcome.SUCCESS, now, duration)
        if self._success_op == "success":
            return self._success_remote(generation, now)
        return self._record_remote(Permit(generation), Outcome.SUCCESS, now, duration)

    async def _success_remote(self, generation: int, now: float) -> None:
        try:
            await self._run("success", generation)
        except BackendUnavailableError as error:
            self._outage(error, now)
            fallback = self._fallback
            if fallback is not None:  # counted on the local breaker, as _record_remote does
                self._fallback_record(Permit(-fallback.generation), Outcome.SUCCESS, now, 0.0)

    def record(
        self, permit: Permit, outcome: Outcome, now: float, duration: float
    ) -> Awaitable[None] | None:
        if permit.generation < 0 or self._fallback is not None:
            self._fallback_record(permit, outcome, now, duration)
            return None
        if outcome is Outcome.CANCELLED and not permit.token:
            return None  # nothing to give back, nothing to count
        if self._batched and not permit.token:
            self._close_run()
            self._buffer.append((permit.generation, int(outcome), round(duration * 1e6), 1))
            self._schedule_flush(soon=outcome is Outcome.FAILURE)
            return None
        return self._record_remote(permit, outcome, now, duration)

    async def _record_remote(
        self, permit: Permit, outcome: Outcome, now: float, duration: float
    ) -> None:
        try:
            await self._run(
                "record", permit.generation, permit.token, int(outcome), round(duration * 1e6)
            )
        except BackendUnavailableError as error:
            self._outage(error, now)
            fallback = self._fallback
            if fallback is not None and not permit.token:
                # The outcome that found the outage still counts, on the local breaker: a
                # threshold of 5 lets exactly 5 failing calls through during an outage.
                self._fallback_record(Permit(-fallback.generation), outcome, now, duration)

    # ------------------------------------------------------------------ batching

    def _close_run(self) -> None:
        """Move the open run of successes into the buffer (anything buffered after it, or
        taken by a flush, must come after it) and close it."""
        run = self._successes
        if run.count:
            self._buffer.append((run.generation, 0, 0, run.count))
            run.count = 0
        run.generation = NO_RUN

    def _schedule_flush(self, *, soon: bool) -> None:
        # Even while a flush runs, arm a timer: flushes are serialized by a lock, and an item
        # appended just after a running flush emptied the buffer must not be stranded.
        loop = asyncio.get_running_loop()
        if self._flush_handle is not None:
            if not soon:
                return
            self._flush_handle.cancel()
        if soon:
            self._flush_handle = loop.call_soon(self._start_flush)
        else:
            self._flush_handle = loop.call_later(self.config.batch_interval, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        self._flush_task = asyncio.get_running_loop().create_task(self.flush())
        self.backend.track(self._flush_task)

    def cancel_timers(self) -> None:
        """Disarm the batch and rejection timers (the backend is closing)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._rejection_handle is not None:
            self._rejection_handle.cancel()
            self._rejection_handle = None

    def _schedule_rejection_flush(self) -> None:
        loop = asyncio.get_running_loop()
        self._rejection_handle = loop.call_later(
            REJECTION_FLUSH_INTERVAL, self._start_rejection_flush
        )

    def _start_rejection_flush(self) -> None:
        self._rejection_handle = None
        if not self._pending_rejections or self._fallback is not None:
            return
        task = asyncio.get_running_loop().create_task(self._flush_rejections())
        self.backend.track(task)

    async def _flush_rejections(self) -> None:
        try:
            await self.flush(rejections=True)
        except BackendUnavailableError as error:
            self._outage(error, self._mono())  # kept in _pending_rejections for the next call
        except BackendError as error:
            _log.warning("circuit_rejection_flush_failed", breaker=self.name, error=str(error))

    @property
    def needs_flush(self) -> bool:
        """Whether :meth:`flush` has anything to do or wait for (rejections aside): a read
        of 1,000 breakers skips 1,000 coroutines that would return at once."""
        return (
            bool(self._buffer)
            or bool(self._successes.count)
            or (self._flush_lock is not None and self._flush_lock.locked())
        )

    async def flush(self, *, rejections: bool = False) -> None:
        """Send every buffered outcome, in order, one script call per generation run.

        Flushes are serialized so a newer batch can never reach Redis before an older one
        (the consecutive-failure rule depends on order). With ``rejections``, locally counted
        rejections are sent too, even when no outcome is buffered (used on close).
        """
        if not self.needs_flush and not (rejections and self._pending_rejections):
            return
        # Even with an empty buffer, wait for a flush in flight: a caller reading stats
        # right after a failure must see that failure applied.
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
            self.may_flush = True
        async with self._flush_lock:
            await self._flush_locked()
            if rejections and self._pending_rejections and self._fallback is None:
                await self._run("batch", self.view.generation, "", "")

    async def _flush_locked(self) -> None:
        while True:
            self._close_run()  # successes counted until now are sent with this batch
            if not self._buffer:
                return
            batch, self._buffer = self._buffer, []
            start = 0
            while start < len(batch):
                generation = batch[start][0]
                end = start
                while end < len(batch) and batch[end][0] == generation:
                    end += 1
                run = batch[start:end]
                # One digit (and one duration) per call, in order: the wire is per call.
                outcomes = "".join(_DIGITS[o] * n for _, o, _, n in run)
                durations = (
                    ",".join(_repeat(d, n) for _, _, d, n in run) if self.config.timed else ""
                )
                try:
                    await self._run("batch", generation, outcomes, durations)
                except BackendUnavailableError as error:
                    # Keep them (in order, ahead of newer ones) for the next flush.
                    self._buffer[:0] = batch[start:]
                    self._outage(error, self._mono())
                    if self._fallback is None and self._flush_handle is None:
                        # fail-closed: retry later
                        self._flush_handle = asyncio.get_running_loop().call_later(
                            RECONNECT_INTERVAL, self._start_flush
                        )
                    return
                except BaseException:
                    # Any other error or a cancellation: nothing of this batch is dropped.
                    self._buffer[:0] = batch[start:]
                    raise
                start = end

    # ------------------------------------------------------------------ operators and stats

    async def operator(self, trigger: Trigger, now: float) -> None:
        await self.flush()
        await self._run("operator", trigger.value)

    async def refresh(self, now: float, wall: float) -> tuple[BreakerRecord, float, float]:
        """Read the shared state in one round trip (after flushing batched outcomes)."""
        await self.flush()
        if self._fallback is None:
            try:
                results = await self.backend.read_breakers([self])
            except BackendUnavailableError:
                # The read itself found the outage: by now a fail_open breaker is on its
                # local fallback and answers with it (what a caller of readings(fallback=True)
                # asked for); a fail_closed one, or a cut that was not an outage, raises.
                if self._fallback is None:
                    raise
            else:
                record: tuple[BreakerRecord, float, float] = results[0]
                return record
        return self._fallback, now, wall - now

    def _config_in_force(self, stored: bytes) -> BreakerConfig:
        """The stored config as a :class:`BreakerConfig` (decoded once per stored value)."""
        cached = self._decoded
        if cached is not None and cached[0] == stored:
            return cached[1]
        config = decode_rules(stored.decode(), self.config)
        self._decoded = (stored, config)
        return config

    def config_of(self, fingerprint: bytes) -> BreakerConfig | None:
        """The stored config of ``fingerprint`` as decoded by an earlier read (a row with no
        fingerprint: this handle's own), or ``None`` if no read has decoded it."""
        if fingerprint == _NO_FINGERPRINT:
            return self.config
        return self._known_configs.get(fingerprint)

    def needs_more(self, code: int, fingerprint: bytes, asked: bytes) -> bool:
        """Whether a row read with ``asked`` (a :data:`READ_ROW`... byte) lacks what its
        record needs: the live leases of a HALF_OPEN row read alone, the config of a
        fingerprint never decoded, the buckets of a config keeping a time window. The
        reader then reads the breaker again, asking for everything."""
        if asked == READ_CONFIG:
            return False
        if code == HALF_OPEN_CODE and asked == READ_ROW:
            return True
        config = self.config_of(fingerprint)
        if config is None:
            return True
        return asked != READ_WINDOW and config.window_duration is not None

    def learn_ask(self, code: int, fingerprint: bytes, *, built: bool = False) -> None:
        """Set what the next read asks for this breaker from the row just read (its
        config decoded by then): the row alone when that is all its record needs.
        ``built``: the script packed the row from the hash's fields (its key held none):
        the next read asks for more than the row too, so it need not be read twice."""
        config = self.config_of(fingerprint)
        if config is None:
            ask = READ_CONFIG
        elif config.window_duration is not None:
            ask = READ_WINDOW
        elif code == HALF_OPEN_CODE or built:
            ask = READ_LEASES
        else:
            ask = READ_ROW
        self.read_ask = ask
        self.read_fp = fingerprint if ask == READ_ROW else None

    def record_from(
        self,
        row: tuple[Any, ...],
        live: int,
        stored: bytes | None,
        window: dict[bytes, bytes] | None,
    ) -> BreakerRecord:
        """Build a :class:`BreakerRecord` from one breaker's part of a ``breaker_read.lua``
        reply (times in seconds): its stored row unpacked
        (:data:`~aioresil.backends.breaker_schema.ROW_FORMAT`: the state's code, the
        integers of ``ROW_NUMBERS``, the success counter last, the fingerprint) and its live
        trial leases. ``stored`` is the stored config when the script sent it (asked for
        with ``READ_CONFIG``); a row without it is read under the config decoded for its
        fingerprint by an earlier read (the reader reads again a row whose fingerprint no
        read decoded: :meth:`needs_more`), which need not be the one decoded last.

        The record carries the config in force (stored with the breaker), not this handle's.
        ``ValueError`` for a row the script marked unreadable (a hash no aioresil wrote).
        """
        (code, g, cf, oa, ou, ro, ts, nf, ni, nsl, nr, wc, wf, ws, successes, fp) = row
        config = self.config
        if stored:
            config = self._config_in_force(stored)
            if fp != _NO_FINGERPRINT:
                known = self._known_configs
                if fp not in known and len(known) >= _KNOWN_CONFIGS:
                    known.clear()  # bounded: a name rebound over and over
                known[fp] = config
        elif stored is None:
            config = self._known_configs.get(fp, config)
        if code >= len(STATES_BY_CODE):
            raise ValueError(f"a stored field is not what aioresil writes (state code {code})")
        # Every slot set once, without BreakerRecord.__init__ (which sets them all, then this
        # would set most again): half the cost of a record, 0.3 ms of a 1,000-breaker read.
        # tests/backends/test_read_rows.py holds this to __init__ slot by slot.
        rec = _new_record(BreakerRecord)
        rec.config = config
        state = STATES_BY_CODE[code]
        if state is None:  # NO_STATE: a breaker no script wrote reads as a new one
            rec.state, rec.generation = CLOSED, 1
        else:
            rec.state, rec.generation = state, g
        rec.consecutive_failures = cf
        rec.opened_at = oa / 1e6 if oa else None
        rec.open_until = ou / 1e6
        rec.reopen_count = ro
        rec.trials = dict.fromkeys(range(live), math.inf) if live else {}
        rec.trial_successes = ts
        rec.next_token = 1
        rec.loose = rec.loose_generation = rec.ticketed = rec.framed = 0
        rec.successes, rec.failures, rec.ignored, rec.slow = successes, nf, ni, nsl
        rec.rejected = nr + self._pending_rejections
        if config.window_size is None and config.window_duration is None:
            rec.window = None
        else:
            rec.window = machine.new_window(config)
            # A count window's counters only for a config keeping one: breaker.lua keeps
            # them for a time window too, where the buckets are what counts.
            self._restore_window(rec, (wc, wf, ws), window)
        return rec

    @staticmethod
    def _restore_window(
        rec: BreakerRecord, counts: tuple[int, int, int], window: dict[bytes, bytes] | None
    ) -> None:
        if isinstance(rec.window, CountWindow):
            rec.window.calls, rec.window.failures, rec.window.slow = counts
        elif isinstance(rec.window, TimeWindow) and window:
            # Bucket indexes are floor(now_us / width_us) == floor(now_s / width_s): the same
            # numbers TimeWindow uses, so its expire() applies unchanged.
            for index in sorted(int(k) for k in window):
                calls, failures, slow = (int(x) for x in window[str(index).encode()].split())
                rec.window.restore_bucket(index, calls, failures, slow)
                rec.window.calls += calls
                rec.window.failures += failures
                rec.window.slow += slow

    # ------------------------------------------------------------------ backend failures

    def _outage(self, error: BackendUnavailableError, now: float) -> None:
        """Redis could not be reached: apply the configured policy (once per outage)."""
        if self.config.on_backend_error == "fail_closed":
            if not self._outage_logged:
                self._outage_logged = True
                _log.error(
                    "circuit_backend_unavailable",
                    breaker=self.name,
                    policy="fail_closed",
                    error=str(error),
                )
                self._emit_event(BackendFailover(self.name, time.time(), "fail_closed", str(error)))
            # Refuse calls until a script call succeeds again: with the view OPEN and its
            # timeout elapsed, every call asks Redis (and gets BackendUnavailableError).
            self.view.state = OPEN
            self.view.open_until = 0.0
            self.view.generation = 0
            return
        if self._fallback is None:
            self._close_run()  # successes judged by the fallback must not join it
            self._fallback = BreakerRecord(self.config)
            self._last_probe = self._mono()
            self._sync_view_from_fallback()
            _log.error(
                "circuit_backend_unavailable",
                breaker=self.name,
                policy="fail_open",
                error=str(error),
            )
            self._emit_event(BackendFailover(self.name, time.time(), "fail_open", str(error)))

    def _sync_view_from_fallback(self) -> None:
        fallback = self._fallback
        assert fallback is not None
        view = self.view
        view.state = fallback.state
        view.generation = -fallback.generation  # never equal to a Redis generation
        view.open_until = fallback.open_until

    def _fallback_acquire(self, fallback: BreakerRecord, now: float) -> Permit | Rejection:
        decision, transition = machine.acquire(fallback, self.config, now)
        self._sync_view_from_fallback()
        if transition is not None:
            self._emit(transition, None)
        if isinstance(decision, Permit):
            return Permit(-decision.generation, decision.token)
        return decision

    def _fallback_record(
        self, permit: Permit, outcome: Outcome, now: float, duration: float
    ) -> None:
        fallback = self._fallback
        if fallback is None or permit.generation >= 0:
            return  # a permit from the other side of a switch: drop it
        transition = machine.record(
            fallback, self.config, Permit(-permit.generation, permit.token), outcome, now, duration
        )
        self._sync_view_from_fallback()
        if transition is not None:
            retry_after = max(fallback.open_until - now, 0.0) if transition.new is OPEN else None
            self._emit(transition, retry_after)
        self._maybe_probe()

    def _maybe_probe(self) -> None:
        """Ping Redis at most every RECONNECT_INTERVAL while on the fallback.

        Timed on this handle's own clock: the breaker passes ``now=0.0`` on its untimed hot
        path, so the caller's ``now`` cannot drive it.
        """
        now = self._mono()
        if now - self._last_probe < RECONNECT_INTERVAL:
            return
        self._last_probe = now
        if self._probe_task is not None and not self._probe_task.done():
            return
        self._probe_task = asyncio.get_running_loop().create_task(self._probe())
        self.backend.track(self._probe_task)

    def backend_down(self, reason: str) -> None:
        """The shared backend was marked unavailable (by any operation on it): apply the
        policy now, so this breaker's next call is decided locally instead of racing the
        detection (zero cost on the hot path: the view changes, not the checks)."""
        self._outage(BackendUnavailableError(reason), self._mono())

    async def backend_back(self) -> None:
        """The backend's own probe reached Redis again: leave the fallback now, not at the
        next ``RECONNECT_INTERVAL`` ping (joining a probe in flight: one at a time, see
        :meth:`_probe`)."""
        if self._fallback is None:
            return
        task = self._probe_task
        if task is None or task.done():
            task = self._probe_task = asyncio.get_running_loop().create_task(self._probe())
            self.backend.track(task)
        await asyncio.wait([task])  # its cancellation (the loop shutting down) is not ours

    async def _probe(self) -> None:
        """Leave the fallback with the view Redis holds, even an older generation (Redis may
        have lost transitions in a failover: see :meth:`apply_read_view`).

        Why the readings dropped during the read are applied after it: a transition another
        process made after Redis ran this read reaches us as a pub/sub message (or a reply)
        while we are still on the fallback, where :meth:`apply_view` drops it. Adopting only
        the read would leave the view CLOSED while Redis holds OPEN, with nothing due to
        correct it but this process's next script call. Probes run one at a time
        (:meth:`backend_back` joins the one in flight), so no probe clears what another is
        collecting.
        """
        try:
            await self.backend.ping()
            self._missed = None
            self._probing = True
            try:
                records = await self.backend.read_views([self])
            finally:
                self._probing = False
        except Exception as error:  # still down (or unreadable): try again later
            _log.debug("circuit_backend_probe_failed", breaker=self.name, error=repr(error))
            return
        state, generation, retry_after_us = records[0]
        missed, self._missed = self._missed, None
        self._fallback = None
        self._outage_logged = False
        self.view.generation = 0
        self.apply_view(state, generation, retry_after_us)
        if missed is not None:  # newer than the read unless older than it (then dropped)
            m_state, m_generation, m_retry_us, received = missed
            if m_retry_us > 0:
                m_retry_us = max(m_retry_us - round((self._mono() - received) * 1e6), 0)
            self.apply_view(m_state, m_generation, m_retry_us)
        _log.info("circuit_backend_recovered", breaker=self.name)
        self._emit_event(BackendRecovered(self.name, time.time()))
        if (self._buffer or self._successes.count) and self._flush_handle is None:
            self._schedule_flush(soon=True)  # outcomes kept during the outage


_DIGITS = "0123"
"""``breaker.lua``'s outcome digit of each :class:`Outcome` value."""


def _repeat(duration_us: int, times: int) -> str:
    """``times`` copies of one duration, comma-separated (``durations`` of op "batch")."""
    return ",".join([str(duration_us)] * times)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
