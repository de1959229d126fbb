"""Breaker rows for the operator endpoints: a thousand breakers per request, cheaply.

Why not :class:`~aioresil.BreakerStats`: ``/health/circuit-breakers`` and ``/metrics`` read
every breaker on every scrape. A frozen dataclass per breaker, then a dict per breaker, then
``json.dumps`` of those dicts cost several microseconds a breaker (issue 17 measured 8.7 ms for
1,000). A :class:`~aioresil.breaker.BreakerRow` is a named tuple with the same fields (so code
written against ``BreakerStats`` attributes reads it unchanged), computed by the function that
computes ``BreakerStats`` (``row_from_record``), and :func:`circuits_json_parts` writes the JSON
of many rows with one format string per row for what changes between requests and a cached
fragment per breaker for what does not (its quoted name, recovery timeout and config), as
pieces the health app joins with the rest of its body in one copy.
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

# name -> (config, recovery_timeout, '"<name>":{"name":"<name>","state":"',
#          '"recovery_timeout":<t>,"config":{...}}'): what a row shares with the previous
# scrape's row of the same breaker, written once, not once per request.
_FRAGMENTS: dict[str, tuple[BreakerConfig | None, float, str, str]] = {}


def _fragments(
    name: str, config: BreakerConfig | None, recovery: float
) -> tuple[BreakerConfig | None, float, str, str]:
    if len(_FRAGMENTS) > 65536:
        _FRAGMENTS.clear()
    quoted = _quoted(name)
    head = f'{quoted}:{{"name":{quoted},"state":"'
    tail = f'"recovery_timeout":{_float(recovery)},"config":{_config_json(config)}}}'
    made = _FRAGMENTS[name] = (config, recovery, head, tail)
    return made


def circuits_json_parts(rows: Sequence[BreakerRow]) -> list[str]:
    """:func:`circuits_json` as pieces to join (the health app joins them with the rest of
    its body: one copy of a body that weighs about 700 bytes per breaker, not three).

    Per breaker: one format string for what changes between requests, and a cached
    fragment for what does not (the quoted name, the recovery timeout and the config)."""
    parts = ["{"]
    add = parts.append
    cache = _FRAGMENTS
    states = _STATE_VALUES
    comma = ""
    for (
        name,
        state,
        failures,
        successes,
        ignored,
        slow_calls,
        total,
        rejected,
        consecutive,
        threshold,
        rate,
        slow,
        half_open,
        opened,
        retry,
        recovery,
        config,
    ) in rows:
        fragment = cache.get(name)
        # type(): a recovery timeout of int 30 writes "30", of float 30.0 "30.0"
        if (
            fragment is None
            or fragment[0] is not config
            or fragment[1] != recovery
            or type(recovery) is not float
        ):
            fragment = _fragments(name, config, recovery)
        add(
            f'{comma}{fragment[2]}{states[state]}","failure_count":{failures},'
            f'"success_count":{successes},"ignored_count":{ignored},'
            f'"slow_call_count":{slow_calls},"total_calls":{total},'
            f'"rejected_calls":{rejected},"consecutive_failures":{consecutive},'
            f'"failure_threshold":{"null" if threshold is None else threshold},'
            f'"failure_rate":{"null" if rate is None else _float(rate)},'
            f'"slow_call_rate":{"null" if slow is None else _float(slow)},'
            f'"half_open_calls":{half_open},'
            f'"opened_at":{"null" if opened is None else _quoted(opened.isoformat())},'
            f'"retry_after":{"null" if retry is None else _float(retry)},'
        )
        add(fragment[3])
        comma = ","
    add("}")
    return parts


def circuits_json(rows: Sequence[BreakerRow]) -> str:
    """``{"<name>": <BreakerStats.to_dict()>, ...}`` as JSON text, in row order."""
    return "".join(circuits_json_parts(rows))
