"""Breaker figures for the operator endpoints: a thousand breakers per request, cheaply.

Why not :class:`~aioresil.BreakerStats`: ``/health/circuit-breakers`` and ``/metrics`` read
every breaker on every scrape. A frozen dataclass per breaker, then a dict per breaker, then
``json.dumps`` of those dicts cost several microseconds a breaker (issue 17 measured 8.7 ms for
1,000). :func:`circuits_json_parts` writes the JSON straight from the registry's readings (the
records the backend returned): one format string per breaker for what changes between
requests, and a cached fragment per breaker for what does not (its quoted name, recovery
timeout and config), as pieces the health app encodes with the rest of its body, a chunk at a
time. A :class:`~aioresil.breaker.BreakerRow` (a named tuple with ``BreakerStats``' fields,
computed by the function that computes ``BreakerStats``, ``row_from_record``) serves the
other readers, and the fallback when the backend cannot answer.

The figures are computed from a record in two places, then: ``row_from_record`` and
:func:`circuits_json_parts`. ``tests/face/test_health_rows.py`` pins the JSON to
``BreakerStats.to_dict()`` for breakers in every state on every backend, and
``tests/face/health/test_golden_bodies.py`` pins the bodies byte for byte.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from ..breaker import BreakerRow, BreakerStats, config_rules, row_from_record
from ..core import machine
from ..core.config import BreakerConfig
from ..core.states import CircuitState

if TYPE_CHECKING:
    from ..backends.base import BreakerReading
    from ..breaker import CircuitBreaker

Readings = Sequence[tuple["CircuitBreaker", "BreakerReading"]]
"""What :meth:`~aioresil.BreakerRegistry.readings` returns: ``(breaker, (record, now,
wall_offset))`` per breaker."""

__all__ = [
    "BreakerRow",
    "circuits_json",
    "circuits_json_parts",
    "row_from_stats",
    "rows_from_readings",
]

_CONFIG_JSON: dict[int, tuple[BreakerConfig, str]] = {}


def _config_json(config: BreakerConfig | None) -> str:
    """``BreakerStats.to_dict()["config"]`` as JSON text (once per config object)."""
    if config is None:
        return "null"
    cached = _CONFIG_JSON.get(id(config))
    if cached is None or cached[0] is not config:
        if len(_CONFIG_JSON) > 4096:
            _CONFIG_JSON.clear()
        text = json.dumps(config_rules(config), separators=(",", ":"))
        cached = _CONFIG_JSON[id(config)] = (config, text)
    return cached[1]


def rows_from_readings(
    readings: Iterable[tuple[CircuitBreaker, BreakerReading]],
) -> list[BreakerRow]:
    """Rows from :meth:`~aioresil.BreakerRegistry.readings` (figures as
    :func:`~aioresil.breaker.stats_from_record` gives them: both use ``row_from_record``)."""
    return [row_from_record(b.name, rec, now, offset) for b, (rec, now, offset) in readings]


def row_from_stats(stats: BreakerStats) -> BreakerRow:
    """The row of a :class:`~aioresil.BreakerStats` (the per-breaker fallback path)."""
    return BreakerRow(*(getattr(stats, field) for field in BreakerRow._fields))


@lru_cache(maxsize=65536)
def _quoted(name: str) -> str:
    return json.dumps(name)


def _float(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return json.dumps(value)  # Infinity / NaN, as json.dumps writes them


_STATE_VALUES = {state: state.value for state in CircuitState}
_OPEN = CircuitState.OPEN

# name -> (config, reopen_count, '"<name>":{"name":"<name>","state":"',
#          '"recovery_timeout":<t>,"config":{...}}'): what a row shares with the previous
# scrape's row of the same breaker, written once, not once per request (keyed by the
# reopen count the timeout is computed from: comparing it is cheaper than computing it).
_FRAGMENTS: dict[str, tuple[BreakerConfig, int, str, str]] = {}


def _fragments(
    name: str, config: BreakerConfig, reopen_count: int
) -> tuple[BreakerConfig, int, str, str]:
    if len(_FRAGMENTS) > 65536:
        _FRAGMENTS.clear()
    quoted = _quoted(name)
    head = f'{quoted}:{{"name":{quoted},"state":"'
    recovery = config.recovery_timeout_for(reopen_count)  # 0 and 1: the first timeout
    tail = f'"recovery_timeout":{_float(recovery)},"config":{_config_json(config)}}}'
    made = _FRAGMENTS[name] = (config, reopen_count, head, tail)
    return made


def circuits_json_parts(readings: Readings) -> list[str]:
    """``{"<name>": <BreakerStats.to_dict()>, ...}`` of the registry's readings as pieces of
    JSON text to join, in reading order: no row, dict or dataclass per breaker.

    The figures are those of ``row_from_record`` (see the module notes)."""
    parts = ["{"]
    add = parts.append
    cache = _FRAGMENTS
    states = _STATE_VALUES
    comma = ""
    for breaker, (rec, now, offset) in readings:
        name = breaker.name
        config = rec.config
        state = rec.state
        fragment = cache.get(name)
        if fragment is None or fragment[0] is not config or fragment[1] != rec.reopen_count:
            fragment = _fragments(name, config, rec.reopen_count)
        threshold = config.failure_threshold
        if rec.window is None:
            rates = '"failure_rate":null,"slow_call_rate":null,'
        else:
            rate = machine.failure_rate(rec, config, now)
            slow = machine.slow_call_rate(rec, config, now)
            rates = (
                f'"failure_rate":{"null" if rate is None else _float(rate)},'
                f'"slow_call_rate":{"null" if slow is None else _float(slow)},'
            )
        opened = rec.opened_at
        successes, failures, ignored = rec.successes, rec.failures, rec.ignored
        add(
            f'{comma}{fragment[2]}{states[state]}","failure_count":{failures},'
            f'"success_count":{successes},"ignored_count":{ignored},'
            f'"slow_call_count":{rec.slow},"total_calls":{successes + failures + ignored},'
            f'"rejected_calls":{rec.rejected},'
            f'"consecutive_failures":{rec.consecutive_failures},'
            f'"failure_threshold":{"null" if threshold is None else threshold},{rates}'
            f'"half_open_calls":{len(rec.trials)},'
            f'"opened_at":{"null" if opened is None else _opened(opened + offset)},'
            f'"retry_after":'
            f"{_float(max(rec.open_until - now, 0.0)) if state is _OPEN else 'null'},"
        )
        add(fragment[3])
        comma = ","
    add("}")
    return parts


def _opened(wall: float) -> str:
    return _quoted(datetime.fromtimestamp(wall, tz=UTC).isoformat())


def circuits_json(rows: Sequence[BreakerRow]) -> str:
    """``{"<name>": <BreakerStats.to_dict()>, ...}`` of ``rows`` as JSON text, in row order
    (the plain way: a dict per row; the endpoints' fallback when the backend cannot answer)."""
    body = {row.name: BreakerStats(**row._asdict()).to_dict() for row in rows}
    return json.dumps(body, separators=(",", ":"))
