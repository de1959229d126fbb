"""Prometheus text exposition (format 0.0.4) of breakers, the dead letter queue and backends.

Why our own renderer: the health app must not need ``prometheus_client``; the format is a few
lines of text. Apps that already run ``prometheus_client`` use
:class:`aioresil.health.prometheus.AioresilCollector`, fed by the same :func:`families`.

Names follow resilience4j's Micrometer names under an ``aioresil_`` prefix, shaped the way
Prometheus expects (the README has the table with each resilience4j counterpart):

* ``aioresil_circuitbreaker_state{name,state}``: gauge, 1 for the current state, 0 for the
  others (``sum by (state)`` counts breakers per state).
* ``aioresil_circuitbreaker_calls_total{name,kind}``: counter, ``kind`` one of
  ``successful``, ``failed``, ``ignored``; ``aioresil_circuitbreaker_not_permitted_calls_total``
  and ``aioresil_circuitbreaker_slow_calls_total``: counters. **Monotonic**: the backend's
  counts start again at 0 when an operator resets a breaker; the exporter adds what it had
  seen before the drop (:class:`Monotonic`), so ``increase()`` never loses the calls before
  a reset.
* ``aioresil_circuitbreaker_failure_rate_ratio`` / ``..._slow_call_rate_ratio{name}``: gauges
  0-1 over the breaker's window; absent (not ``-1``) while the window holds too few calls,
  so ``avg()`` and ``max()`` only see real rates.
* ``aioresil_circuitbreaker_calls_seconds{name,kind}``: histogram of call durations by outcome,
  measured in this process (:class:`~aioresil.health.instruments.CallMetrics`).
* ``aioresil_dlq_entries{queue}`` (present at 0), ``aioresil_dlq_entries_by_type{queue,
  task_type}``, ``aioresil_dlq_oldest_age_seconds``, ``aioresil_dlq_in_flight``, the loss
  signals ``aioresil_dlq_evicted_total``, ``aioresil_dlq_expired_total``,
  ``aioresil_dlq_spooled`` (pushes waiting in this process while Redis is unreachable) and the
  thresholds ``aioresil_dlq_warning_threshold`` / ``aioresil_dlq_critical_threshold``.
* ``aioresil_circuitbreaker_config_info{name,fingerprint}``: gauge, always 1: the fingerprint
  of the config in force (for a Redis breaker, the one stored with it, which the newest
  process to bind the name chose).
* ``aioresil_dlq_redrive_entries{queue,state}``: gauge, the scheduled redrive of a Redis queue
  (``scheduled``, ``due``, ``leased``, ``parked``); ``aioresil_dlq_redrive_total{queue,
  outcome}``: counter, redrives ``handled``, ``failed``, ``parked`` and leases that expired
  (``lease_expired``: a worker died holding one).
* ``aioresil_backend_up{backend}``: 1 while a shared backend serves calls, 0 while it is
  marked unavailable (its health state machine, :mod:`aioresil.backends.backend_health`;
  for a backend without one, whether this scrape's reads succeeded);
  ``aioresil_metrics_source_up{source}``: whether the breakers and the DLQ could be read.
  A read that fails leaves its series out but every other series, including this process's
  own and each breaker's state as this process sees it, is still served (``/metrics`` stays
  200 with Redis down).

Example::

    snapshot = await collect_snapshot(registry=registry, dlq=dlq)
    text = render(snapshot)     # serve as "text/plain; version=0.0.4; charset=utf-8"
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from ..backends.base import BreakerBackend
from ..breaker import BreakerStats
from ..core import machine
from ..core.states import CircuitState
from .rows import BreakerRow, Readings, rows_from_readings

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue

__all__ = [
    "CALL_KINDS",
    "CONTENT_TYPE",
    "STATES",
    "BreakerFigures",
    "DlqSnapshot",
    "Family",
    "FamilySource",
    "MetricsSnapshot",
    "Monotonic",
    "backend_status",
    "breaker_rows",
    "breaker_stats",
    "collect_snapshot",
    "escape_label",
    "families",
    "local_snapshot",
    "render",
    "render_lines",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CALL_KINDS = ("successful", "failed", "ignored")
STATES = tuple(state.value for state in CircuitState)

BreakerFigures = BreakerStats | BreakerRow
"""A breaker's figures: a :class:`~aioresil.BreakerStats` or a row with the same fields."""


@dataclass(frozen=True, slots=True)
class DlqSnapshot:
    """One queue's numbers at one moment (``oldest_age`` in seconds, 0 when empty)."""

    queue: str
    entries: int
    by_type: Mapping[str, int]
    oldest_age: float
    in_flight: int
    evicted: int
    expired: int
    spooled: int
    warning_threshold: int
    critical_threshold: int
    redrive: Mapping[str, int] | None = None
    """The scheduled redrive's figures (:class:`~aioresil.RedriveStats`), Redis queues only."""


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything ``/metrics`` reports, read at one moment.

    ``breakers`` is ``None`` when they could not be read (Redis down), ``dlq`` is ``None``
    when no queue is configured or it could not be read; ``sources`` says which reads
    succeeded, ``backends`` whether each backend is up.
    """

    breakers: tuple[BreakerFigures, ...] | None = ()
    dlq: DlqSnapshot | None = None
    backends: tuple[tuple[str, bool], ...] = ()
    sources: tuple[tuple[str, bool], ...] = ()
    spooled: Mapping[str, int] = field(default_factory=dict)
    taken_at: float = 0.0
    local_states: tuple[tuple[str, CircuitState], ...] = ()
    """Breaker states from this process's local views, rendered when ``breakers`` is None."""
    error: str | None = None
    """``"Class: message"`` of the first read that failed (shown as a comment)."""
    readings: Readings | None = field(default=None, repr=False, compare=False)
    """The registry's readings behind ``breakers`` (:func:`collect_snapshot` keeps them):
    :func:`render` writes them without a row per breaker. Collected with ``rows=False``
    (``/metrics``), ``breakers`` is empty and :meth:`figures` builds the rows."""

    def figures(self) -> tuple[BreakerFigures, ...] | None:
        """Every breaker's figures: ``breakers``, or rows built from ``readings``."""
        if self.readings is not None:
            return tuple(rows_from_readings(self.readings))
        return self.breakers


class Monotonic:
    """Makes counters that restart at 0 (an operator's ``reset()``) monotonic for export.

    A breaker's counters are reset together, so they are tracked as a group: when any of
    them is lower than at the previous scrape, the group was reset, and every member's last
    value is added to that member's offset. Calls made between the last scrape and the reset
    are the only ones lost, and a reset is missed only when every counter of the group has
    climbed back past its old value by the next scrape. (Prometheus reads a drop as a counter
    reset too, but ``increase()`` over a window containing it undercounts.)
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        # key -> (last raw values, offsets or None while there was no reset); a breaker's key
        # is its name, other groups' a tuple (so the two never collide)
        self._seen: dict[str | tuple[str, ...], tuple[tuple[int, ...], tuple[int, ...] | None]] = {}

    def group(self, key: str | tuple[str, ...], raw: tuple[int, ...]) -> tuple[int, ...]:
        """The exported values of the counters ``raw`` of group ``key`` (same order always)."""
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) < 1_000_000:
                self._seen[key] = (raw, None)
            return raw
        last, offsets = seen
        if raw != last:
            if any(now < before for now, before in zip(raw, last, strict=True)):
                if offsets is None:
                    offsets = last
                else:
                    offsets = tuple(o + b for o, b in zip(offsets, last, strict=True))
            self._seen[key] = (raw, offsets)
        if offsets is None:
            return raw  # the common case: never reset while this exporter ran
        return tuple(r + o for r, o in zip(raw, offsets, strict=True))


async def breaker_rows(registry: BreakerRegistry | None) -> list[BreakerRow]:
    """Every breaker's row from one registry read (one round trip on Redis); when the backend
    cannot answer, each breaker's own policy answers (local fallback or error)."""
    if registry is None:
        return []
    return rows_from_readings(await registry.readings(fallback=True))


async def breaker_stats(registry: BreakerRegistry) -> dict[str, BreakerStats]:
    """``{name: stats}`` of every breaker: one round trip on Redis; in memory, read directly
    (no coroutine per breaker). Both are :meth:`BreakerRegistry.stats`."""
    return await registry.stats()


def _backend_label(backend: Any) -> str:
    return type(backend).__name__.removesuffix("Backend").lower() or "backend"


def _declared(backend: Any) -> tuple[str, bool] | None:
    """``(name, up)`` from the backend's health state machine, when it has one
    (``RedisBackend.health``: up unless UNAVAILABLE)."""
    health = backend.health if isinstance(backend, BreakerBackend) else None
    stats = getattr(health, "stats", None)
    if not callable(stats):
        return None
    try:
        return str(getattr(health, "name", "backend")), bool(stats().up)
    except Exception:
        return None


def backend_status(
    backends: Iterable[Any], failed: Iterable[Any] = ()
) -> tuple[tuple[str, bool], ...]:
    """``(label, up)`` per distinct backend: its health state when it keeps one, else
    whether none of this scrape's reads on it failed."""
    down = list(failed)
    out: list[tuple[str, bool]] = []
    seen: list[Any] = []
    for candidate in backends:
        if candidate is None or any(candidate is b for b in seen):
            continue
        seen.append(candidate)
        declared = _declared(candidate)
        if declared is not None:
            label, up = declared
        else:
            label, up = _backend_label(candidate), all(candidate is not b for b in down)
        taken = sum(1 for name, _ in out if name == label or name.startswith(label + "-"))
        out.append((label if not taken else f"{label}-{taken + 1}", up))
    return tuple(out)


def _local_states(registry: BreakerRegistry | None) -> tuple[tuple[str, CircuitState], ...]:
    """Each breaker's state as this process's local view has it (no I/O)."""
    if registry is None:
        return ()
    return tuple((breaker.name, breaker.state) for breaker in registry)


def local_snapshot(
    *,
    registry: BreakerRegistry | None = None,
    dlq: DeadLetterQueue | None = None,
    backend: Any = None,
    why: str,
) -> MetricsSnapshot:
    """What ``/metrics`` knows without reading any backend (its reads timed out): local
    breaker states, this process's spool, backends as their health states say (else down)."""
    every = [backend, getattr(registry, "backend", None), getattr(dlq, "backend", None)]
    sources = tuple(
        (source, False)
        for source, present in (("breakers", registry), ("dlq", dlq))
        if present is not None
    )
    return MetricsSnapshot(
        breakers=None,
        backends=backend_status(every, failed=every),
        sources=sources,
        spooled={} if dlq is None else {dlq.name: _spooled(dlq)},
        taken_at=time.time(),
        local_states=_local_states(registry),
        error=why,
    )


async def collect_snapshot(
    *,
    registry: BreakerRegistry | None = None,
    dlq: DeadLetterQueue | None = None,
    now: float | None = None,
    dlq_warning_threshold: int = 10,
    dlq_critical_threshold: int = 50,
    backend: Any = None,
    rows: bool = True,
) -> MetricsSnapshot:
    """Read every breaker (one round trip on Redis) and the DLQ statistics (one script).

    Never raises for a backend that cannot be read: that read's series are left out and
    ``sources``/``backends`` say so (``/metrics`` keeps serving what this process knows).
    The registry's readings are kept too (``MetricsSnapshot.readings``, what :func:`render`
    writes fastest); ``rows=False`` leaves ``breakers`` empty instead of building a row per
    breaker (:meth:`MetricsSnapshot.figures` builds them when asked).
    """
    if now is None:
        # the queue's own clock: its failed_at labels come from it (a FakeClock in tests)
        now = dlq.clock.time() if dlq is not None else time.time()
    sources: list[tuple[str, bool]] = []
    failed: list[Any] = []
    errors: list[str] = []
    breakers: tuple[BreakerFigures, ...] | None = ()
    readings: Readings | None = None
    local: tuple[tuple[str, CircuitState], ...] = ()
    if registry is not None:
        try:
            readings = await registry.readings(fallback=True)
            if rows:
                breakers = tuple(rows_from_readings(readings))
            sources.append(("breakers", True))
        except Exception as exc:
            breakers = None
            local = _local_states(registry)
            sources.append(("breakers", False))
            failed.append(registry.backend)
            errors.append(f"{type(exc).__name__}: {exc}")
    snap: DlqSnapshot | None = None
    spooled: dict[str, int] = {}
    if dlq is not None:
        spooled[dlq.name] = _spooled(dlq)
        try:
            stats = await dlq.stats()
            sources.append(("dlq", True))
        except Exception as exc:
            sources.append(("dlq", False))
            failed.append(dlq.backend)
            errors.append(f"{type(exc).__name__}: {exc}")
        else:
            oldest = stats.oldest_failure
            age = 0.0 if oldest is None else max(now - oldest.timestamp(), 0.0)
            redrive = await _redrive(dlq)
            snap = DlqSnapshot(
                queue=dlq.name,
                entries=stats.total_failed_tasks,
                by_type=dict(stats.failures_by_task_type),
                oldest_age=age,
                in_flight=stats.in_flight,
                evicted=stats.evicted,
                expired=stats.expired,
                spooled=stats.spooled,
                warning_threshold=dlq_warning_threshold,
                critical_threshold=dlq_critical_threshold,
                redrive=redrive,
            )
    backends = backend_status(
        (backend, getattr(registry, "backend", None), getattr(dlq, "backend", None)), failed
    )
    return MetricsSnapshot(
        breakers=breakers,
        dlq=snap,
        backends=backends,
        sources=tuple(sources),
        spooled=spooled,
        taken_at=now,
        local_states=local,
        error=errors[0] if errors else None,
        readings=readings,
    )


async def _redrive(dlq: DeadLetterQueue) -> dict[str, int] | None:
    """The queue's redrive schedule when it has one (Redis), else None."""
    from ..stores.dlq_redrive import Redrive

    if not Redrive.available(dlq):
        return None
    figures = (await Redrive(dlq).stats()).to_dict()
    figures.pop("queue")
    return figures


def _spooled(dlq: DeadLetterQueue) -> int:
    """Pushes waiting in this process's spool (read locally: known with Redis down)."""
    return dlq.spooled


def escape_label(value: str) -> str:
    r"""Escape a label value for the text format: ``\`` ``"`` and newlines.

    >>> escape_label('a"b\\c')
    'a\\"b\\\\c'
    """
    # A lone surrogate has no UTF-8 form: written as the text \udcff (then escaped as any \).
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --------------------------------------------------------------------------- families

Labels = tuple[tuple[str, str], ...]


class FamilySource(Protocol):
    """Something that renders one family of its own, such as
    :class:`~aioresil.health.instruments.CallMetrics` (a protocol, so this module does not
    import the instruments that import it)."""

    def family(self) -> Family: ...


@dataclass(slots=True)
class Family:
    """One metric family: ``samples`` are ``(suffix, labels, value)`` (suffix ``_total``,
    ``_bucket``, ... or ``""``)."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, *labels: tuple[str, str], suffix: str = "") -> None:
        self.samples.append((suffix, labels, value))


# (name, type, help) of the breaker families, in render order: shared by the fast text path
# (_render_breakers) and by families() (the prometheus_client collector).
_STATE, _CALLS, _REJECTED, _SLOW, _FAILURE_RATE, _SLOW_RATE, _CONSECUTIVE = (
    ("aioresil_circuitbreaker_state", "gauge", "1 for the breaker's current state, else 0"),
    (
        "aioresil_circuitbreaker_calls",
        "counter",
        "Calls that ran under the breaker, by outcome kind (monotonic across resets)",
    ),
    (
        "aioresil_circuitbreaker_not_permitted_calls",
        "counter",
        "Calls the breaker refused while open, forced open or out of trial permits",
    ),
    (
        "aioresil_circuitbreaker_slow_calls",
        "counter",
        "Calls slower than the breaker's slow_call_duration",
    ),
    (
        "aioresil_circuitbreaker_failure_rate_ratio",
        "gauge",
        "Failure rate 0-1 over the breaker's window (absent until minimum_calls)",
    ),
    (
        "aioresil_circuitbreaker_slow_call_rate_ratio",
        "gauge",
        "Slow-call rate 0-1 over the breaker's window (absent until minimum_calls)",
    ),
    (
        "aioresil_circuitbreaker_consecutive_failures",
        "gauge",
        "Failures in a row since the last success",
    ),
)
_CONFIG = (
    "aioresil_circuitbreaker_config_info",
    "gauge",
    "1 per breaker, labelled with the fingerprint of the config in force (stored with it)",
)


def _counts(stats: BreakerFigures, mono: Monotonic) -> tuple[int, ...]:
    """(successful, failed, ignored, rejected, slow), monotonic across resets."""
    return mono.group(
        stats.name,
        (
            stats.success_count,
            stats.failure_count,
            stats.ignored_count,
            stats.rejected_calls,
            stats.slow_call_count,
        ),
    )


def families(
    snapshot: MetricsSnapshot,
    *,
    monotonic: Monotonic | None = None,
    calls: FamilySource | None = None,
    breakers: bool = True,
) -> list[Family]:
    """The snapshot (and this process's call metrics) as metric families, in render order
    (``breakers=False`` leaves out the breaker families, which :func:`render` writes itself)."""
    mono = monotonic if monotonic is not None else Monotonic()
    out: list[Family] = []
    if breakers:
        out += _breaker_families(snapshot.figures() or (), mono, snapshot.local_states)
    if calls is not None:
        out.append(calls.family())
    if snapshot.dlq is not None:
        out += _dlq_families(snapshot.dlq, mono)
    elif snapshot.spooled:
        spooled = Family("aioresil_dlq_spooled", "gauge", _SPOOLED_HELP)
        for queue, count in sorted(snapshot.spooled.items()):
            spooled.add(count, ("queue", queue))
        out.append(spooled)
    if snapshot.backends:
        up = Family("aioresil_backend_up", "gauge", "1 when the backend answers, else 0")
        for label, is_up in snapshot.backends:
            up.add(1 if is_up else 0, ("backend", label))
        out.append(up)
    if snapshot.sources:
        sources = Family(
            "aioresil_metrics_source_up",
            "gauge",
            "1 when this scrape could read the source (breakers, dlq), else 0",
        )
        for label, ok in snapshot.sources:
            sources.add(1 if ok else 0, ("source", label))
        out.append(sources)
    return out


_SPOOLED_HELP = "Dead letters waiting in this process's spool for Redis to come back"


def _breaker_families(
    breakers: tuple[BreakerFigures, ...],
    mono: Monotonic,
    local_states: tuple[tuple[str, CircuitState], ...] = (),
) -> list[Family]:
    state, calls_total, rejected, slow, failure_rate, slow_rate, consecutive = (
        Family(*spec)
        for spec in (_STATE, _CALLS, _REJECTED, _SLOW, _FAILURE_RATE, _SLOW_RATE, _CONSECUTIVE)
    )
    config = Family(*_CONFIG)
    for stats in breakers:
        name = ("name", stats.name)
        current = stats.state.value
        for value in STATES:
            state.add(1 if value == current else 0, name, ("state", value))
        counts = _counts(stats, mono)
        for kind, count in zip(CALL_KINDS, counts, strict=False):
            calls_total.add(count, name, ("kind", kind), suffix="_total")
        rejected.add(counts[3], name, suffix="_total")
        slow.add(counts[4], name, suffix="_total")
        if stats.failure_rate is not None:
            failure_rate.add(stats.failure_rate, name)
        if stats.slow_call_rate is not None:
            slow_rate.add(stats.slow_call_rate, name)
        consecutive.add(stats.consecutive_failures, name)
        config.add(1, name, ("fingerprint", stats.config_fingerprint or ""))
    if not breakers:
        for label, current in local_states:
            for value in STATES:
                state.add(1 if value == current.value else 0, ("name", label), ("state", value))
    return [state, calls_total, rejected, slow, failure_rate, slow_rate, consecutive, config]


def _head(spec: tuple[str, str, str]) -> list[str]:
    name, kind, text = spec
    head = f"{name}_total" if kind == "counter" else name
    return [f"# HELP {head} {text}", f"# TYPE {head} {kind}"]


@lru_cache(maxsize=65536)
def _label(name: str) -> str:
    return escape_label(name)


def _state_lines(label: str, current: CircuitState) -> str:
    return "\n".join(
        f'aioresil_circuitbreaker_state{{name="{label}",state="{state}"}} '
        f"{1 if state == current.value else 0}"
        for state in STATES
    )


class _Lines:
    """What a breaker's lines share from one scrape to the next, written once: its escaped
    label, the start of each of its counter and gauge lines (up to the value), its five
    state lines per state seen, its config line per fingerprint."""

    __slots__ = (
        "config",
        "consecutive",
        "failed",
        "fingerprint",
        "ignored",
        "label",
        "rejected",
        "slow",
        "states",
        "succeeded",
    )

    def __init__(self, name: str) -> None:
        label = self.label = _label(name)
        self.states: dict[CircuitState, str] = {}
        self.fingerprint: str | None = None
        self.config = ""
        calls = f'aioresil_circuitbreaker_calls_total{{name="{label}",kind='
        self.succeeded = f'{calls}"successful"}} '
        self.failed = f'\n{calls}"failed"}} '
        self.ignored = f'\n{calls}"ignored"}} '
        self.rejected = f'aioresil_circuitbreaker_not_permitted_calls_total{{name="{label}"}} '
        self.slow = f'aioresil_circuitbreaker_slow_calls_total{{name="{label}"}} '
        self.consecutive = f'aioresil_circuitbreaker_consecutive_failures{{name="{label}"}} '

    def state(self, current: CircuitState) -> str:
        text = self.states.get(current)
        if text is None:
            text = self.states[current] = _state_lines(self.label, current)
        return text

    def config_line(self, fingerprint: str) -> str:
        """Write (and keep) the config line for ``fingerprint``: the renderer calls it when
        the breaker's fingerprint is not :attr:`fingerprint`, and reads :attr:`config`
        itself otherwise (a call per breaker costs 0.09 ms of a 1,000-breaker scrape)."""
        self.fingerprint = fingerprint
        self.config = (
            f'aioresil_circuitbreaker_config_info{{name="{self.label}",'
            f'fingerprint="{fingerprint}"}} 1'
        )
        return self.config


_LINES: dict[str, _Lines] = {}


def _lines_of(name: str) -> _Lines:
    if len(_LINES) > 65536:
        _LINES.clear()
    made = _LINES[name] = _Lines(name)
    return made


def _render_breakers(readings: Readings, mono: Monotonic) -> list[str]:
    """The breaker families as text lines (a piece may hold several), written straight from
    the registry's readings: with thousands of breakers this is most of ``/metrics``, and the
    generic :class:`Family` path over rows costs several times more. One pass over the
    breakers fills every family; a breaker's label, state lines and config line are cached.

    The figures are ``row_from_record``'s (``tests/face/health/test_metrics.py`` pins this
    text to the generic path over rows)."""
    states: list[str] = []
    calls: list[str] = []
    rejected: list[str] = []
    slow: list[str] = []
    failure_rates: list[str] = []
    slow_rates: list[str] = []
    consecutive: list[str] = []
    configs: list[str] = []
    group = mono.group
    cache = _LINES
    for breaker, (rec, now, _) in readings:
        name = breaker.name
        lines = cache.get(name) or _lines_of(name)
        state = rec.state
        states.append(lines.states.get(state) or lines.state(state))
        ok, failed, ignored, refused, slowed = group(
            name, (rec.successes, rec.failures, rec.ignored, rec.rejected, rec.slow)
        )
        calls.append(f"{lines.succeeded}{ok}{lines.failed}{failed}{lines.ignored}{ignored}")
        rejected.append(f"{lines.rejected}{refused}")
        slow.append(f"{lines.slow}{slowed}")
        config = rec.config
        if rec.window is not None:
            label = lines.label
            rate = machine.failure_rate(rec, config, now)
            if rate is not None:
                failure_rates.append(
                    f'aioresil_circuitbreaker_failure_rate_ratio{{name="{label}"}} {_number(rate)}'
                )
            rate = machine.slow_call_rate(rec, config, now)
            if rate is not None:
                slow_rates.append(
                    f'aioresil_circuitbreaker_slow_call_rate_ratio{{name="{label}"}} '
                    f"{_number(rate)}"
                )
        consecutive.append(f"{lines.consecutive}{rec.consecutive_failures}")
        configs.append(
            lines.config
            if lines.fingerprint == config.fingerprint
            else lines.config_line(config.fingerprint)
        )
    out = _head(_STATE)
    out += states
    for spec, chunk in (
        (_CALLS, calls),
        (_REJECTED, rejected),
        (_SLOW, slow),
        (_FAILURE_RATE, failure_rates),
        (_SLOW_RATE, slow_rates),
        (_CONSECUTIVE, consecutive),
        (_CONFIG, configs),
    ):
        out += _head(spec)
        out += chunk
    return out


def _dlq_families(dlq: DlqSnapshot, mono: Monotonic) -> list[Family]:
    queue = ("queue", dlq.queue)
    lost = mono.group(("dlq", dlq.queue), (dlq.evicted, dlq.expired))
    rows: list[tuple[str, str, str, float]] = [
        ("aioresil_dlq_entries", "gauge", "Dead letters waiting in the queue", dlq.entries),
        (
            "aioresil_dlq_oldest_age_seconds",
            "gauge",
            "Age of the oldest dead letter (0 when empty)",
            round(dlq.oldest_age, 3),
        ),
        ("aioresil_dlq_in_flight", "gauge", "Entries leased by a retry right now", dlq.in_flight),
        (
            "aioresil_dlq_evicted",
            "counter",
            "Entries dropped to make room (overflow=drop_oldest): lost dead letters",
            lost[0],
        ),
        (
            "aioresil_dlq_expired",
            "counter",
            "Entries removed by the retention period: lost dead letters",
            lost[1],
        ),
        ("aioresil_dlq_spooled", "gauge", _SPOOLED_HELP, dlq.spooled),
        (
            "aioresil_dlq_warning_threshold",
            "gauge",
            "Entries from which /health/dlq is degraded",
            dlq.warning_threshold,
        ),
        (
            "aioresil_dlq_critical_threshold",
            "gauge",
            "Entries from which /health/dlq is unhealthy (503)",
            dlq.critical_threshold,
        ),
    ]
    out: list[Family] = []
    for name, kind, text, value in rows:
        family = Family(name, kind, text)
        family.add(value, queue, suffix="_total" if kind == "counter" else "")
        out.append(family)
    by_type = Family("aioresil_dlq_entries_by_type", "gauge", "Dead letters waiting, by task type")
    for task_type, count in sorted(dlq.by_type.items()):
        by_type.add(count, queue, ("task_type", task_type))
    out.insert(1, by_type)
    if dlq.redrive is not None:
        entries = Family(
            "aioresil_dlq_redrive_entries", "gauge", "Dead letters in the redrive schedule"
        )
        for state in ("scheduled", "due", "leased", "parked"):
            entries.add(dlq.redrive[state], queue, ("state", state))
        outcomes = Family(
            "aioresil_dlq_redrive", "counter", "Scheduled redrives by outcome (fleet-wide)"
        )
        for outcome, key in (
            ("handled", "handled"),
            ("failed", "failed"),
            ("parked", "parked_total"),
            ("lease_expired", "lease_expired"),
        ):
            outcomes.add(dlq.redrive[key], queue, ("outcome", outcome), suffix="_total")
        out += [entries, outcomes]
    return out


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{escape_label(value)}"' for key, value in labels)
    return "{" + inner + "}"


def render_families(all_families: Iterable[Family]) -> str:
    """The text exposition of ``all_families`` (ends with a newline, as the format requires)."""
    out: list[str] = []
    add = out.append
    for family in all_families:
        # text format 0.0.4: a counter's family is named like its samples, with _total
        head = f"{family.name}_total" if family.type == "counter" else family.name
        add(f"# HELP {head} {family.help}")
        add(f"# TYPE {head} {family.type}")
        for suffix, labels, value in family.samples:
            add(f"{family.name}{suffix}{_labels(labels)} {_number(value)}")
    out.append("")
    return "\n".join(out)


def render_lines(
    snapshot: MetricsSnapshot,
    *,
    monotonic: Monotonic | None = None,
    calls: FamilySource | None = None,
) -> list[str]:
    """:func:`render`'s text as pieces to join with newlines (a piece may hold several
    lines): the health app encodes them a chunk at a time instead of copying ~1 KB per
    breaker into one string, then again into bytes."""
    mono = monotonic if monotonic is not None else Monotonic()
    if snapshot.readings is None:  # rows, or no breaker could be read: the generic path
        return [render_families(families(snapshot, monotonic=mono, calls=calls))]
    lines = _render_breakers(snapshot.readings, mono)
    lines.append(render_families(families(snapshot, monotonic=mono, calls=calls, breakers=False)))
    return lines


def render(
    snapshot: MetricsSnapshot,
    *,
    monotonic: Monotonic | None = None,
    calls: FamilySource | None = None,
) -> str:
    """The text exposition of ``snapshot`` (and of ``calls``, this process's histograms)."""
    return "\n".join(render_lines(snapshot, monotonic=monotonic, calls=calls))
