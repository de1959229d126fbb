"""Adaptive timeouts: the sketch's arithmetic, convergence on a latency-shifting upstream,
and a new process starting with the fleet's knowledge (real Redis, a separate process)."""

from __future__ import annotations

import itertools

import pytest

from aioresil import AdaptiveTimeout, CallTimeoutError, MemoryBackend, Timeout
from aioresil.backends.redis import RedisBackend
from aioresil.policies.adaptive import LatencySketch, bucket_of, upper_ms

from .fleet_jobs import run_all
from .shifting_upstream import ShiftingUpstream


def test_buckets_are_upper_bounds_at_most_19_percent_above() -> None:
    for ms in (0.5, 1.0, 1.5, 7.3, 10.0, 99.0, 1234.5, 60_000.0):
        upper = upper_ms(bucket_of(ms))
        assert ms <= upper * (1 + 1e-9)
        assert ms <= 1.0 or upper <= ms * 2**0.25 * (1 + 1e-9)


async def test_cold_start_uses_the_default_then_the_percentile_times_the_factor() -> None:
    sketch = LatencySketch(
        AdaptiveTimeout(percentile=0.9, factor=2.0, floor=0.001, min_samples=50), "t", 1.0
    )
    for _ in range(49):
        sketch.observe(0.010)
    await sketch.sync()
    assert sketch.deadline() == 1.0  # 49 < min_samples
    sketch.observe(0.010)
    await sketch.sync()
    assert sketch.deadline() == pytest.approx(upper_ms(bucket_of(10.0)) / 1000 * 2.0)


async def test_floor_and_ceiling_bound_the_deadline() -> None:
    fast = LatencySketch(AdaptiveTimeout(floor=0.05, min_samples=1), "f", 1.0)
    fast.observe(0.001)
    await fast.sync()
    assert fast.deadline() == 0.05
    slow = LatencySketch(AdaptiveTimeout(min_samples=1, ceiling=3.0), "s", 1.0)
    slow.observe(10.0)
    await slow.sync()
    assert slow.deadline() == 3.0


async def test_black_holes_leave_the_deadline_alone_a_shift_grows_it() -> None:
    sketch = LatencySketch(
        AdaptiveTimeout(percentile=0.9, min_samples=10, floor=0.001, expand_above=0.2), "c", 10
    )
    for _ in range(20):
        sketch.observe(0.010)
    await sketch.sync()
    learnt = sketch.deadline()
    for _ in range(3):  # 10 % of the calls hang: no sample, no growth
        for _ in range(18):
            sketch.observe(0.010)
        sketch.timed_out()
        sketch.timed_out()
        await sketch.sync()
        assert sketch.deadline() == learnt
    seen = [learnt]
    for _ in range(4):  # the upstream got slow: every call is cut at the current deadline
        for _ in range(9):
            sketch.timed_out()
        assert sketch.deadline() == seen[-1]  # 9 calls: not yet told from bad luck
        sketch.timed_out()  # the 10th: grown at once, before any sync
        seen.append(sketch.deadline())
        await sketch.sync()
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert seen[-1] == pytest.approx(16 * learnt)  # times factor 2 at every sync
    for _ in range(4):  # calm again: the boost decays back to what the sketch says
        for _ in range(10):
            sketch.observe(0.010)
        await sketch.sync()
    assert sketch.deadline() == pytest.approx(learnt)


def test_bad_adaptive_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="percentile"):
        AdaptiveTimeout(percentile=1.5)
    with pytest.raises(ValueError, match="factor"):
        AdaptiveTimeout(factor=0.5)
    with pytest.raises(ValueError, match="ceiling"):
        AdaptiveTimeout(floor=2, ceiling=1)
    with pytest.raises(TypeError, match="adaptive"):
        Timeout(1.0, adaptive=0.5)  # type: ignore[arg-type]


async def _run(guard: Timeout, upstream: ShiftingUpstream, calls: int) -> int:
    failures = 0
    for _ in range(calls):
        try:
            await guard.call(upstream.request)
        except CallTimeoutError:
            failures += 1
    return failures


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_converges_on_a_latency_shifting_upstream(
    kind: str, request: pytest.FixtureRequest
) -> None:
    backend = (
        MemoryBackend()
        if kind == "memory"
        else RedisBackend.from_url(request.getfixturevalue("redis_url"))
    )
    upstream = await ShiftingUpstream(latency=0.005).start()
    try:
        timeout = Timeout(
            2.0,
            name="shifting",
            adaptive=AdaptiveTimeout(
                percentile=0.95,
                factor=2.0,
                floor=0.001,
                min_samples=30,
                sync_interval=0.01,
                backend=backend,
            ),
        )
        await _run(timeout, upstream, 60)
        fast = timeout.deadline
        assert fast < 1.0  # learnt: far below the 2 s default
        upstream.latency = 0.05  # the upstream slows down beyond the learnt deadline
        await _run(timeout, upstream, 30)
        slow = timeout.deadline
        late_failures = await _run(timeout, upstream, 15)
        print(
            f"\n{kind}: fast deadline {fast:.3f}s, after the shift {slow:.3f}s, "
            f"late failures {late_failures}/15"
        )
        assert slow > 0.05 and slow > fast
        assert late_failures <= 3  # a CPU stall on a loaded machine can cut a call
        assert timeout.stats().samples >= 30
    finally:
        await upstream.stop()
        await backend.aclose()


@pytest.mark.redis_server
async def test_a_new_process_starts_with_the_fleets_sketch(redis_url: str) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        settings = AdaptiveTimeout(backend=backend, name="pricing", min_samples=20)
        sketch = LatencySketch(settings, "pricing", 5.0)
        for _ in range(40):
            sketch.observe(0.020)
        await sketch.sync()
        learnt = sketch.deadline()
    assert learnt < 5.0
    (answer,) = await run_all(
        [{"job": "sketch", "url": redis_url, "name": "pricing", "default": 5.0}]
    )
    assert answer["before"] == 5.0  # nothing known before the first contact
    assert answer["samples"] == 40
    assert answer["after"] == pytest.approx(learnt)
