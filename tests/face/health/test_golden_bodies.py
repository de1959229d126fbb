"""``/health/circuit-breakers`` and ``/metrics`` byte for byte, on a fixed set of breakers.

Why golden files: the JSON shape of the health body is part of the spec (the seed report's
health JSON), and issue 17 rewrote both endpoints for speed. These bodies were recorded from
the code before that rewrite; any change to a byte of them is a change of the public format,
made on purpose (rerun with ``AIORESIL_UPDATE_GOLDEN=1`` and review the diff) or a bug.

The set covers every state, a count window, a time window with slow calls, a reopened
breaker with backoff, a name that needs escaping in JSON and in label values, and a
non-ASCII name. Time is a :class:`~aioresil.testing.FakeClock` (the Redis backend takes
"now" from it too), so the bodies are reproducible on memory and on a real redis-server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aioresil import BreakerConfig, BreakerRegistry
from aioresil.health import health_app
from aioresil.testing import FakeClock

from ...helpers import fail, rejected, succeed
from ..test_operator_reads import get

GOLDEN = Path(__file__).with_name("golden")
UPDATE = os.environ.get("AIORESIL_UPDATE_GOLDEN") == "1"
TIMESTAMP = "2023-11-14T22:13:20+00:00"


async def slow_success(breaker: Any, clock: FakeClock, seconds: float) -> None:
    async with breaker:
        clock.advance(seconds)


async def fixed_registry(backend: Any, clock: FakeClock) -> tuple[BreakerRegistry, Any]:
    """The breakers, and a trial permit still held (``__aexit__`` it after reading)."""
    registry = BreakerRegistry(backend=backend, clock=clock)
    backoff = registry.get(
        "backoff",
        BreakerConfig(failure_threshold=1, recovery_timeout=10, backoff_multiplier=2.0),
    )
    await fail(backoff)
    clock.advance(11)
    await fail(backoff)  # the trial fails: reopened, 20 s this time
    trial = registry.get("trial", BreakerConfig(failure_threshold=1, recovery_timeout=1))
    await fail(trial)
    clock.advance(2)
    await trial.__aenter__()  # holds a trial permit: HALF_OPEN, one live lease
    plain = registry.get("plain", BreakerConfig(failure_threshold=3))
    for _ in range(3):
        await succeed(plain)
    await fail(plain)
    opened = registry.get('op"en\n\\', BreakerConfig(failure_threshold=1, recovery_timeout=30))
    await fail(opened)
    await rejected(opened)
    await rejected(opened)
    counted = registry.get(
        "counted",
        BreakerConfig(
            failure_threshold=None,
            failure_rate_threshold=0.75,
            window_size=8,
            minimum_calls=3,
        ),
    )
    for _ in range(3):
        await succeed(counted)
    await fail(counted)
    few = registry.get(
        "few-calls", BreakerConfig(failure_rate_threshold=0.5, window_size=4, minimum_calls=3)
    )
    await succeed(few)  # below minimum_calls: rates are null
    await registry.get("forced").force_open()
    await registry.get("off").disable()
    await succeed(registry.get("naïve-名前"))
    registry.get("never-called")
    timed = registry.get(
        "timed",
        BreakerConfig(
            failure_rate_threshold=0.9,
            window_duration=10.0,
            minimum_calls=2,
            slow_call_duration=1.0,
            slow_call_rate_threshold=0.9,
        ),
    )
    await succeed(timed)
    await slow_success(timed, clock, 1.5)
    clock.advance(3.25)  # the calls land in different buckets
    await succeed(timed)
    await fail(timed)
    return registry, trial


async def bodies(backend: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    from aioresil.health import app as app_module

    monkeypatch.setattr(app_module, "_now", lambda: TIMESTAMP)
    registry, trial = await fixed_registry(backend, clock)
    app = health_app(registry=registry)
    out = []
    for path in ("/health/circuit-breakers", "/metrics"):
        status, body = await get(app, path)
        assert status == 200, (path, body[:300])
        out.append(body)
    await trial.__aexit__(None, None, None)
    return out


async def test_breaker_bodies_are_byte_for_byte_the_recorded_ones(
    backend: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind = "memory" if type(backend).__name__ == "MemoryBackend" else "redis"
    breakers, metrics = await bodies(backend, clock, monkeypatch)
    for body, name in (
        (breakers, f"circuit-breakers.{kind}.json"),
        (metrics, f"metrics.{kind}.txt"),
    ):
        path = GOLDEN / name
        if UPDATE:
            GOLDEN.mkdir(exist_ok=True)
            path.write_bytes(body)
        assert path.exists(), f"{path} is missing: run with AIORESIL_UPDATE_GOLDEN=1 and review it"
        expected = path.read_bytes()
        assert body == expected, _first_difference(body, expected)


def _first_difference(got: bytes, expected: bytes) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    near = slice(max(at - 80, 0), at + 80)
    return f"first difference at byte {at}: got {got[near]!r}, expected {expected[near]!r}"
