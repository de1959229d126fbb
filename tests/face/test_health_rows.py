"""The operator endpoints' fast path gives what ``BreakerStats`` gives (issue 17).

``/health/circuit-breakers`` and ``/metrics`` write their bodies straight from the backend's
records (:mod:`aioresil.health.rows`); these tests pin that JSON and the rows to
``stats_from_record`` and ``BreakerStats.to_dict()`` for breakers in every state, on every
backend (``tests/face/health/test_golden_bodies.py`` pins the bodies byte for byte).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry, CircuitState
from aioresil.health.app import RawJson, _encode
from aioresil.health.metrics import breaker_rows
from aioresil.health.rows import (
    BreakerRow,
    circuits_json,
    circuits_json_parts,
    row_from_stats,
    rows_from_readings,
)
from aioresil.testing import FakeClock

from ..helpers import fail, succeed


async def mixed_registry(backend: Any, clock: FakeClock) -> BreakerRegistry:
    registry = BreakerRegistry(backend=backend, clock=clock)
    plain = registry.get("plain", BreakerConfig(failure_threshold=3))
    await succeed(plain)
    await fail(plain)
    opened = registry.get('op"en\n', BreakerConfig(failure_threshold=1, recovery_timeout=30))
    await fail(opened)
    rated = registry.get(
        "rated",
        BreakerConfig(
            failure_rate_threshold=0.9,
            window_duration=10.0,
            minimum_calls=2,
            slow_call_duration=1.0,
            slow_call_rate_threshold=0.9,
        ),
    )
    for _ in range(3):
        await succeed(rated)
    await fail(rated)
    trial = registry.get("trial", BreakerConfig(failure_threshold=1, recovery_timeout=1))
    await fail(trial)
    clock.advance(2)
    await trial.__aenter__()  # holds a trial permit: HALF_OPEN
    await registry.get("forced").force_open()
    await registry.get("off").disable()
    await trial.__aexit__(None, None, None)
    return registry


async def test_rows_and_json_equal_breaker_stats(backend: Any, clock: FakeClock) -> None:
    registry = await mixed_registry(backend, clock)
    rows = await breaker_rows(registry)
    stats = await registry.stats()
    assert [r.name for r in rows] == list(stats)
    assert {r.state.value for r in rows} >= {"closed", "open", "forced_open", "disabled"}
    for row in rows:
        assert row == row_from_stats(stats[row.name])
    expected = {name: one.to_dict() for name, one in stats.items()}
    assert json.loads(circuits_json(rows)) == expected
    with_rates = [r for r in rows if r.failure_rate is not None]
    assert with_rates, "a breaker with a window reports its rate"


async def test_json_from_readings_is_the_json_of_their_rows(backend: Any, clock: FakeClock) -> None:
    """The endpoint's JSON, written from records, is byte for byte the plain ``json.dumps`` of
    ``to_dict()`` of the rows (the figures are computed in both places)."""
    registry = await mixed_registry(backend, clock)
    clock.advance(0.5)  # retry_after and the time window move on
    readings = await registry.readings()
    fast = "".join(circuits_json_parts(readings))
    assert fast == circuits_json(rows_from_readings(readings))
    assert json.loads(fast) == {name: s.to_dict() for name, s in (await registry.stats()).items()}


def test_circuits_json_writes_floats_as_json_does() -> None:
    row = BreakerRow(
        name="x",
        state=CircuitState.OPEN,
        failure_count=1,
        success_count=2,
        ignored_count=0,
        slow_call_count=0,
        total_calls=3,
        rejected_calls=4,
        consecutive_failures=1,
        failure_threshold=None,
        failure_rate=1 / 3,
        slow_call_rate=None,
        half_open_calls=0,
        opened_at=None,
        retry_after=math.inf,
        recovery_timeout=1e-7,
    )
    parsed = json.loads(circuits_json([row]))["x"]
    assert parsed["failure_rate"] == 1 / 3
    assert parsed["retry_after"] == math.inf and parsed["recovery_timeout"] == 1e-7
    assert parsed["failure_threshold"] is None and parsed["rejected_calls"] == 4


def test_raw_json_is_spliced_and_lookalike_strings_are_not() -> None:
    body = {"a": "raw-0-0", "b": RawJson('{"k":[1,2]}'), "c": [RawJson("null")]}
    assert json.loads(_encode(body)) == {"a": "raw-0-0", "b": {"k": [1, 2]}, "c": [None]}


@pytest.mark.parametrize("backend_kind", ["memory"], indirect=True)
async def test_the_health_body_lists_every_breaker(backend: Any, clock: FakeClock) -> None:
    from aioresil.health import health_app

    from .test_operator_reads import get

    registry = await mixed_registry(backend, clock)
    status, body = await get(health_app(registry=registry), "/health/circuit-breakers")
    assert status == 200
    parsed = json.loads(body)
    assert parsed["circuit_breakers"] == {
        name: one.to_dict() for name, one in (await registry.stats()).items()
    }
    assert parsed["summary"]["total_breakers"] == 6
