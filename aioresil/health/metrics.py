"""Prometheus text exposition (format 0.0.4) of breakers and the dead letter queue.

Why our own renderer: the health app must not need ``prometheus_client``; the format is a few
lines of text. Apps that already run ``prometheus_client`` use
:class:`aioresil.health.prometheus.AioresilCollector` instead, fed by the same
:class:`MetricsSnapshot`.

Names follow resilience4j's Micrometer names under an ``aioresil_`` prefix:

* ``aioresil_circuitbreaker_state{name,state}``: gauge, 1 for the breaker's current state and
  0 for every other state (so ``sum by (state)`` counts breakers per state).
* ``aioresil_circuitbreaker_calls_total{name,kind}``: counter, ``kind`` one of
  ``successful``, ``failed``, ``ignored``, ``rejected`` (since the breaker's last reset).
* ``aioresil_circuitbreaker_failure_rate{name}``: gauge, percent 0-100 over the breaker's
  window, ``-1`` while the window holds fewer than ``minimum_calls`` calls or the breaker
  has no rate rule (resilience4j's convention).
* ``aioresil_circuitbreaker_config_info{name,fingerprint}``: gauge, always 1: the fingerprint
  of the config in force (for a Redis breaker, the one stored with it).
* ``aioresil_circuitbreaker_failure_threshold{name}``: gauge, the config in force's
  ``failure_threshold`` (-1 when that rule is off).
* ``aioresil_dlq_entries{task_type}``: gauge, entries per task type.
* ``aioresil_dlq_oldest_age_seconds``: gauge, age of the oldest entry (0 when empty).
* ``aioresil_backend_up{backend}``: gauge, 1 while a shared backend serves calls, 0 while it
  is marked unavailable (see :mod:`aioresil.backends.backend_health`). During an outage
  ``/metrics`` still answers: this gauge plus each breaker's state as this process sees it.

Example::

    snapshot = await collect_snapshot(registry=registry, dlq=dlq)
    text = render(snapshot)     # serve as "text/plain; version=0.0.4; charset=utf-8"
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from ..breaker import BreakerStats
from ..core.states import CircuitState
from ..exceptions import BackendError
from .rows import BreakerRow, row_from_stats, rows_from_readings

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue

__all__ = [
    "CALL_KINDS",
    "CONTENT_TYPE",
    "STATES",
    "BreakerFigures",
    "MetricsSnapshot",
    "breaker_rows",
    "breaker_stats",
    "calls_by_kind",
    "collect_snapshot",
    "escape_label",
    "failure_rate_percent",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CALL_KINDS = ("successful", "failed", "ignored", "rejected")
STATES = tuple(state.value for state in CircuitState)

BreakerFigures = BreakerStats | BreakerRow
"""A breaker's figures: a :class:`~aioresil.BreakerStats` or a row with the same fields."""


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything ``/metrics`` reports, read at one moment.

    ``dlq_by_type`` is ``None`` when no dead letter queue is configured (its metrics are then
    left out); ``dlq_oldest_age`` is in seconds.
    """

    breakers: tuple[BreakerFigures, ...] = ()
    dlq_by_type: Mapping[str, int] | None = None
    dlq_oldest_age: float = 0.0
    taken_at: float = field(default=0.0)
    backends_up: tuple[tuple[str, bool], ...] = ()
    """``(backend name, up)`` for each shared backend with a health state machine."""
    local_states: tuple[tuple[str, CircuitState], ...] = ()
    """Breaker states from local views, used when ``breakers`` could not be read."""


def calls_by_kind(stats: BreakerFigures) -> tuple[int, int, int, int]:
    """``(successful, failed, ignored, rejected)`` in :data:`CALL_KINDS` order."""
    return (stats.success_count, stats.failure_count, stats.ignored_count, stats.rejected_calls)


def failure_rate_percent(stats: BreakerFigures) -> float:
    """The breaker's failure rate in percent, or ``-1`` when it has none yet."""
    return -1.0 if stats.failure_rate is None else round(stats.failure_rate * 100.0, 6)


async def breaker_rows(registry: BreakerRegistry | None) -> list[BreakerRow]:
    """Every breaker's row from one registry read (one round trip on Redis); when the backend
    cannot answer, each breaker's own policy answers (local fallback or error)."""
    if registry is None:
        return []
    try:
        return rows_from_readings(await registry.readings())
    except BackendError:
        return [row_from_stats(stats) for stats in (await registry.stats()).values()]


async def breaker_stats(registry: BreakerRegistry) -> dict[str, BreakerStats]:
    """``{name: stats}`` of every breaker: one round trip on Redis; in memory, read directly
    (no coroutine per breaker). Both are :meth:`BreakerRegistry.stats`."""
    return await registry.stats()


async def collect_snapshot(
    *,
    registry: BreakerRegistry | None = None,
    dlq: DeadLetterQueue | None = None,
    now: float | None = None,
) -> MetricsSnapshot:
    """Read every breaker (one round trip on Redis) and the DLQ statistics (one script).

    Raises whatever the reads raise (:class:`~aioresil.BackendError` when Redis is down and
    a breaker's policy is ``fail_closed``, or the DLQ cannot be read).
    """
    if now is None:
        # the queue's own clock: its failed_at labels come from it (a FakeClock in tests)
        clock = getattr(dlq, "_clock", None)
        now = clock.time() if clock is not None else time.time()
    breakers = tuple(await breaker_rows(registry))
    by_type: Mapping[str, int] | None = None
    oldest_age = 0.0
    if dlq is not None:
        stats = await dlq.stats()
        by_type = dict(stats["failures_by_task_type"])
        oldest = stats["oldest_failure"]
        if oldest is not None:
            oldest_age = max(now - datetime.fromisoformat(oldest).timestamp(), 0.0)
    return MetricsSnapshot(breakers, by_type, oldest_age, now)


def escape_label(value: str) -> str:
    r"""Escape a label value for the text format: ``\`` ``"`` and newlines.

    >>> escape_label('a"b\\c')
    'a\\"b\\\\c'
    """
    # A lone surrogate has no UTF-8 form: written as the text \udcff (then escaped as any \).
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@lru_cache(maxsize=65536)
def _label(name: str) -> str:
    return escape_label(name)


def _state_template(current: str) -> list[str]:
    text = "\n".join(
        f'aioresil_circuitbreaker_state{{name="\x00",state="{state}"}} '
        f"{1 if state == current else 0}"
        for state in STATES
    )
    return text.split("\x00")


# Per current state, the breaker's five state lines split around its label: one join each.
_STATE_LINES = {state: _state_template(state.value) for state in CircuitState}


def render(snapshot: MetricsSnapshot) -> str:
    """The text exposition of ``snapshot`` (ends with a newline, as the format requires).

    Built for thousands of breakers per scrape: each breaker's lines of one family come
    from one join or one format string, and labels are escaped once per process.
    """
    out: list[str] = []
    add = out.append
    names = [(_label(s.name), s) for s in snapshot.breakers]
    states = [(label, stats.state) for label, stats in names] or [
        (_label(name), state) for name, state in snapshot.local_states
    ]
    if snapshot.backends_up:
        add("# HELP aioresil_backend_up 1 while the shared backend serves calls, 0 while down")
        add("# TYPE aioresil_backend_up gauge")
        for backend, up in snapshot.backends_up:
            add(f'aioresil_backend_up{{backend="{escape_label(backend)}"}} {int(up)}')
    add("# HELP aioresil_circuitbreaker_state 1 for the circuit breaker's current state, else 0")
    add("# TYPE aioresil_circuitbreaker_state gauge")
    lines = _STATE_LINES
    for label, circuit_state in states:
        add(label.join(lines[circuit_state]))
    add("# HELP aioresil_circuitbreaker_calls_total Calls seen by the breaker, by outcome kind")
    add("# TYPE aioresil_circuitbreaker_calls_total counter")
    ok, failed, ignored, rejected = CALL_KINDS
    for label, stats in names:
        add(
            f'aioresil_circuitbreaker_calls_total{{name="{label}",kind="{ok}"}} '
            f"{stats.success_count}\n"
            f'aioresil_circuitbreaker_calls_total{{name="{label}",kind="{failed}"}} '
            f"{stats.failure_count}\n"
            f'aioresil_circuitbreaker_calls_total{{name="{label}",kind="{ignored}"}} '
            f"{stats.ignored_count}\n"
            f'aioresil_circuitbreaker_calls_total{{name="{label}",kind="{rejected}"}} '
            f"{stats.rejected_calls}"
        )
    add(
        "# HELP aioresil_circuitbreaker_failure_rate Failure rate in percent over the window, "
        "-1 when not computed"
    )
    add("# TYPE aioresil_circuitbreaker_failure_rate gauge")
    for label, stats in names:
        rate = stats.failure_rate
        add(
            f'aioresil_circuitbreaker_failure_rate{{name="{label}"}} '
            f"{'-1' if rate is None else _number(round(rate * 100.0, 6))}"
        )
    add(
        "# HELP aioresil_circuitbreaker_config_info 1 per breaker, labelled with the "
        "fingerprint of the config in force (stored with it)"
    )
    add("# TYPE aioresil_circuitbreaker_config_info gauge")
    for label, stats in names:
        fingerprint = escape_label(stats.config_fingerprint or "")
        add(f'aioresil_circuitbreaker_config_info{{name="{label}",fingerprint="{fingerprint}"}} 1')
    add(
        "# HELP aioresil_circuitbreaker_failure_threshold Consecutive failures that open the "
        "circuit under the config in force (-1: off)"
    )
    add("# TYPE aioresil_circuitbreaker_failure_threshold gauge")
    for label, stats in names:
        limit = -1 if stats.failure_threshold is None else stats.failure_threshold
        add(f'aioresil_circuitbreaker_failure_threshold{{name="{label}"}} {limit}')
    if snapshot.dlq_by_type is not None:
        add("# HELP aioresil_dlq_entries Dead letters waiting, by task type")
        add("# TYPE aioresil_dlq_entries gauge")
        for task_type, count in sorted(snapshot.dlq_by_type.items()):
            add(f'aioresil_dlq_entries{{task_type="{escape_label(task_type)}"}} {count}')
        add("# HELP aioresil_dlq_oldest_age_seconds Age of the oldest dead letter (0 when empty)")
        add("# TYPE aioresil_dlq_oldest_age_seconds gauge")
        add(f"aioresil_dlq_oldest_age_seconds {_number(round(snapshot.dlq_oldest_age, 3))}")
    out.append("")
    return "\n".join(out)
