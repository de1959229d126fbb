"""Breaker rows for the operator endpoints: a thousand breakers per request, cheaply.

Why not :class:`~aioresil.BreakerStats`: ``/health/circuit-breakers`` and ``/metrics`` read
every breaker on every scrape. A frozen dataclass per breaker, then a dict per breaker, then
``json.dumps`` of those dicts cost several microseconds a breaker (issue 17 measured 8.7 ms for
1,000). A :class:`~aioresil.breaker.BreakerRow` is a named tuple with the same fields (so code
written against ``BreakerStats`` attributes reads it unchanged), computed by the function that
computes ``BreakerStats`` (``row_from_record``), and :func:`circuits_json` writes the JSON of
many rows with one format string per row and names escaped once per process.
``tests/face/test_operator_reads.py`` pins rows and JSON to ``stats_from_record`` and ``to_dict``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from ..breaker import BreakerRow, config_rules, row_from_record
from ..core.config import BreakerConfig
from ..core.states import CircuitState

if TYPE_CHECKING:
    from ..backends.base import BreakerReading
    from ..breaker import BreakerStats, CircuitBreaker

__all__ = ["BreakerRow", "circuits_json", "row_from_stats", "rows_from_readings"]

_STATE_VALUES = {state: state.value for state in CircuitState}


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


def circuits_json(rows: Sequence[BreakerRow]) -> str:
    """``{"<name>": <BreakerStats.to_dict()>, ...}`` as JSON text, in row order."""
    parts: list[str] = []
    add = parts.append
    states = _STATE_VALUES
    for row in rows:
        name = _quoted(row.name)
        threshold = row.failure_threshold
        opened = row.opened_at
        rate = row.failure_rate
        slow = row.slow_call_rate
        retry = row.retry_after
        add(
            f'{name}:{{"name":{name},"state":"{states[row.state]}",'
            f'"failure_count":{row.failure_count},"success_count":{row.success_count},'
            f'"ignored_count":{row.ignored_count},"slow_call_count":{row.slow_call_count},'
            f'"total_calls":{row.total_calls},"rejected_calls":{row.rejected_calls},'
            f'"consecutive_failures":{row.consecutive_failures},'
            f'"failure_threshold":{"null" if threshold is None else threshold},'
            f'"failure_rate":{"null" if rate is None else _float(rate)},'
            f'"slow_call_rate":{"null" if slow is None else _float(slow)},'
            f'"half_open_calls":{row.half_open_calls},'
            f'"opened_at":{"null" if opened is None else _quoted(opened.isoformat())},'
            f'"retry_after":{"null" if retry is None else _float(retry)},'
            f'"recovery_timeout":{_float(row.recovery_timeout)},'
            f'"config":{_config_json(row.config)}}}'
        )
    return "{" + ",".join(parts) + "}"
