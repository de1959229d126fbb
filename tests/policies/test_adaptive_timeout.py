"""Adaptive timeouts: the sketch's arithmetic, convergence on a latency-shifting upstream,
and a new process starting with the fleet's knowledge (real Redis, a separate process)."""

from __future__ import annotations

import itertools

import anyio
import pytest

from aioresil import AdaptiveTimeout, CallTimeoutError, MemoryBackend, Timeout
from aioresil.backends.redis import RedisBackend
from aioresil.policies.adaptive import LatencySketch, bucket_of, upper_ms

from ..fleet_jobs import run_all
from ..shifting_upstream import ShiftingUpstream


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


class _Scope:
    """Stands in for an anyio CancelScope: the witness rules only set ``deadline``."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline


def test_company_holds_the_cut_and_a_later_calls_answer_sets_it_from_its_duration() -> None:
    sketch = LatencySketch(AdaptiveTimeout(factor=2.0), "w", 1.0)
    a = sketch.begin(_Scope(0.0), 0.0, 0.02)
    assert a.scope.deadline == 0.02  # alone: the learnt deadline stands
    b = sketch.begin(_Scope(0.0), 0.001, 0.02)
    assert a.scope.deadline == 1.0 and b.scope.deadline == 1.001  # held, up to the ceiling
    assert sketch.held_in_flight() == 2
    sketch.succeeded(b, 0.060)  # b started later and answered in 60 ms: slower, not gone
    assert a.scope.deadline == pytest.approx(0.0 + 2.0 * 0.060)
    sketch.succeeded(a, 0.062)
    assert sketch.saved == 2  # both answered after their learnt 20 ms
    c = sketch.begin(_Scope(0.0), 0.1, 0.02)
    assert c.scope.deadline == pytest.approx(0.12)  # nothing else in flight: nothing to hold


def test_a_fast_witness_cuts_a_hung_call_at_its_learnt_deadline_not_earlier() -> None:
    sketch = LatencySketch(AdaptiveTimeout(factor=2.0), "w", 1.0)
    hung = sketch.begin(_Scope(0.0), 0.0, 0.024)
    fast = sketch.begin(_Scope(0.0), 0.002, 0.024)
    sketch.succeeded(fast, 0.005)  # 2 x 5 ms is below the learnt 24 ms
    assert hung.scope.deadline == pytest.approx(0.024)
    assert sketch.saved == 0


def test_an_earlier_call_witnesses_only_once_the_held_call_passed_its_learnt_deadline() -> None:
    """At a latency step, calls sent before it answer fast just after a slow call started:
    that proves nothing about the slow one. One answering after its deadline does."""
    sketch = LatencySketch(AdaptiveTimeout(factor=2.0), "w", 1.0)
    before = sketch.begin(_Scope(0.0), 0.0, 0.02)  # sent before the step (answers in 10 ms)
    also_before = sketch.begin(_Scope(0.0), 0.001, 0.02)  # sent before the step, slow
    slow = sketch.begin(_Scope(0.0), 0.005, 0.02)  # after the step: will take 60 ms
    sketch.succeeded(before, 0.010)  # at 10 ms: before slow's learnt deadline (25 ms)
    assert slow.scope.deadline == pytest.approx(1.005)  # still held
    sketch.succeeded(also_before, 0.059)  # at 60 ms, past slow's 25 ms: a witness
    assert slow.scope.deadline == pytest.approx(0.005 + 2 * 0.059)


def test_failures_are_no_witnesses_and_a_call_left_alone_gets_its_deadline_back() -> None:
    sketch = LatencySketch(AdaptiveTimeout(factor=2.0), "w", 1.0)
    a = sketch.begin(_Scope(0.0), 0.0, 0.02)
    b = sketch.begin(_Scope(0.0), 0.001, 0.02)
    c = sketch.begin(_Scope(0.0), 0.002, 0.02)
    sketch.end(b)  # b failed (or was cut): it proves nothing about a
    assert a.scope.deadline == 1.0 and c.scope.deadline == 1.002
    sketch.end(c)  # a is alone: no witness can come, so its learnt deadline stands again
    assert a.scope.deadline == pytest.approx(0.02) and sketch.held_in_flight() == 0
    d = sketch.begin(_Scope(0.0), 0.003, 0.02)  # company again: held anew
    assert a.scope.deadline == 1.0 and d.scope.deadline == 1.003
    sketch.end(a)
    sketch.end(a)  # idempotent
    sketch.end(d)
    for i in range(1000):  # a stream of calls that all fail: the held list does not grow
        e = sketch.begin(_Scope(0.0), 1.0 + i, 0.02)
        f = sketch.begin(_Scope(0.0), 1.0 + i, 0.02)
        sketch.end(e)
        sketch.end(f)
    assert sketch.held_in_flight() == 0 and sketch.saved == 0


async def _concurrent(
    guard: Timeout, upstream: ShiftingUpstream, calls: int, *, hang_every: int = 0, tasks: int = 10
) -> tuple[int, int, list[float]]:
    """``calls`` requests from ``tasks`` tasks: (answered calls cut, hung calls cut, the
    seconds each hung call waited)."""
    false_cuts = hung_cuts = 0
    waited: list[float] = []
    todo = list(range(calls))

    async def worker() -> None:
        nonlocal false_cuts, hung_cuts
        while todo:
            i = todo.pop()
            hang = hang_every > 0 and i % hang_every == hang_every - 1
            started = anyio.current_time()
            try:
                if hang:
                    async with guard:
                        await upstream.request(hang=True)
                else:
                    await guard.call(upstream.request)
            except CallTimeoutError:
                if hang:
                    hung_cuts += 1
                    waited.append(anyio.current_time() - started)
                else:
                    false_cuts += 1

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(worker)
    return false_cuts, hung_cuts, waited


async def test_a_latency_shift_under_concurrency_cuts_no_answered_call() -> None:
    """The failure the fleet benchmark showed (answered calls cut at the 6x latency step
    until the shift rule caught up): held cuts wait for a witness, so none is cut."""
    upstream = await ShiftingUpstream(latency=0.005).start()
    try:
        guard = Timeout(
            2.0,
            name="witnessed",
            adaptive=AdaptiveTimeout(percentile=0.99, factor=2.0, floor=0.001, min_samples=50),
        )
        false_cuts, _, _ = await _concurrent(guard, upstream, 100)
        learnt = guard.deadline
        assert false_cuts == 0 and learnt < 0.05  # learnt: well below the 2 s default
        upstream.latency = 0.06  # 12x slower: far past the learnt deadline
        false_cuts, hung_cuts, waited = await _concurrent(guard, upstream, 200, hang_every=20)
        assert false_cuts == 0
        assert hung_cuts == 10  # the black-holed requests are still cut ...
        assert max(waited) < 1.0  # ... long before the 2 s a fixed timeout waits
        assert guard.stats().saved > 0  # calls past their learnt deadline that answered
        assert guard.deadline > 0.06  # the held calls' successes taught the sketch the shift
    finally:
        await upstream.stop()


async def test_a_lone_caller_is_still_cut_at_the_learnt_deadline() -> None:
    upstream = await ShiftingUpstream(latency=0.002).start()
    try:
        guard = Timeout(
            2.0,
            adaptive=AdaptiveTimeout(factor=2.0, floor=0.001, min_samples=20, sync_interval=0.01),
        )
        assert await _run(guard, upstream, 30) == 0
        learnt = guard.deadline
        assert learnt < 0.5
        started = anyio.current_time()
        with pytest.raises(CallTimeoutError):
            await guard.call(upstream.request, hang=True)
        assert anyio.current_time() - started < 1.0  # no witness to wait for: cut as learnt
        assert learnt < 0.5 and guard.stats().saved == 0
    finally:
        await upstream.stop()


def test_a_slower_answer_raises_what_a_fast_witness_allowed() -> None:
    """With jitter, the first answers after a latency step are the fast ones: a later, slower
    answer gives the calls already vouched for its reach."""
    sketch = LatencySketch(AdaptiveTimeout(factor=2.0), "w", 1.0)
    slow = sketch.begin(_Scope(0.0), 0.0, 0.02)  # will need 90 ms
    fast = sketch.begin(_Scope(0.0), 0.001, 0.02)
    medium = sketch.begin(_Scope(0.0), 0.002, 0.02)
    sketch.succeeded(fast, 0.030)
    assert slow.scope.deadline == pytest.approx(0.060)
    sketch.succeeded(medium, 0.055)  # before slow's 60 ms: it now may wait 110 ms
    assert slow.scope.deadline == pytest.approx(0.110)
    sketch.succeeded(slow, 0.090)
    assert sketch.saved == 3


def test_a_witness_never_moves_a_deadline_past_the_ceiling() -> None:
    """A slow answer within the ceiling times ``factor`` is past it: the held calls it vouches
    for still wait no longer than the ceiling (``Timeout(1.0)`` never waits 1.8 s)."""
    sketch = LatencySketch(AdaptiveTimeout(factor=2.0), "w", 1.0)
    a = sketch.begin(_Scope(0.0), 0.0, 0.1)
    b = sketch.begin(_Scope(0.0), 0.0, 0.1)
    c = sketch.begin(_Scope(0.0), 0.01, 0.1)
    sketch.succeeded(c, 0.5)  # a witness for a and b: 2 x 0.5 s reaches the ceiling
    assert a.scope.deadline == pytest.approx(1.0) and b.scope.deadline == pytest.approx(1.0)
    sketch.succeeded(a, 0.9)  # slower still: the vouched call is raised, but not past it
    assert b.scope.deadline == pytest.approx(1.0)


async def test_a_scope_that_refuses_to_exit_still_ends_the_calls_flight() -> None:
    """Leaving a Timeout while an inner cancel scope is still open is a misuse anyio refuses;
    the sketch must not keep counting that call in flight (a lone caller would then be held
    to the ceiling forever, and the queue of vouched calls would never drain)."""
    timeout = Timeout(1.0, adaptive=AdaptiveTimeout(min_samples=1), name="misused")
    sketch = timeout._sketch
    assert sketch is not None
    await timeout.__aenter__()
    inner = anyio.CancelScope()
    inner.__enter__()
    assert sketch._live == 1
    try:
        with pytest.raises(RuntimeError, match="cancel scope"):
            await timeout.__aexit__(None, None, None)  # the inner scope is still open
    finally:
        inner.__exit__(None, None, None)
    assert sketch._live == 0
