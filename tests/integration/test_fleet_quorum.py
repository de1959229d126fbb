"""Quorum breakers: one sick instance never opens the fleet circuit; K sick instances do, once.

The property runs on the memory backend (many instances in one process, hypothesis picks
who fails and in which order); the real thing runs as separate processes on one real Redis
(``tests/workers/fleet_feature_worker.py``), where nothing but the server is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioresil import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    MemoryBackend,
    QuorumBreaker,
    QuorumConfig,
    QuorumReported,
    StateChanged,
)
from aioresil.backends.redis import RedisBackend
from aioresil.fleet.quorum import fleet_config
from aioresil.testing import FakeClock

from ..fleet_jobs import run_all
from ..helpers import eventually, fail


class Down(Exception):
    pass


async def call(breaker: QuorumBreaker, *, fail: bool) -> str:
    try:
        async with breaker:
            if fail:
                raise Down()
    except Down:
        return "failed"
    except CircuitOpenError as error:
        return "fleet" if error.name == breaker.name else "local"
    return "ok"


def fleet(n: int, k: int, backend: Any, clock: FakeClock) -> list[QuorumBreaker]:
    config = BreakerConfig(failure_threshold=3, recovery_timeout=1000)
    return [
        QuorumBreaker(
            "api",
            config=config,
            quorum=QuorumConfig(quorum=k, instance=f"i{i}", report_ttl=500),
            backend=backend,
            clock=clock,
        )
        for i in range(n)
    ]


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 4),
    steps=st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=80),
)
def test_one_sick_instance_never_opens_the_fleet_circuit(
    k: int, steps: list[tuple[int, bool]]
) -> None:
    """Instance 0 fails every call; the others succeed; any interleaving, K >= 2."""

    async def run() -> None:
        clock = FakeClock()
        breakers = fleet(5, k, MemoryBackend(), clock)
        for index, advance in steps:
            await call(breakers[index], fail=index == 0)
            if advance:
                clock.advance(1.0)
            assert breakers[0].fleet.state is CircuitState.CLOSED
        stats = await breakers[1].stats()
        assert stats.trips == 0
        assert set(stats.reporters) <= {"i0"}

    asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 4), order=st.permutations(list(range(4))), rounds=st.integers(3, 6))
def test_k_sick_instances_open_it_exactly_once(k: int, order: list[int], rounds: int) -> None:
    async def run() -> None:
        breakers = fleet(4, k, MemoryBackend(), FakeClock())
        opened: list[StateChanged] = []
        breakers[0].fleet.add_listener(
            lambda e: (
                opened.append(e)
                if isinstance(e, StateChanged) and e.new is CircuitState.OPEN
                else None
            )
        )
        reports: list[QuorumReported] = []
        for b in breakers:
            b.add_listener(reports.append)
        sick = order[:k]
        for _ in range(rounds):
            for index in sick:
                await call(breakers[index], fail=True)
        assert len(opened) == 1
        assert breakers[3].fleet.state is CircuitState.OPEN
        assert await call(breakers[order[-1]], fail=False) == "fleet"
        stats = await breakers[0].stats()
        assert stats.trips == 1
        assert set(stats.last_trip_instances) == {f"i{i}" for i in sick}
        tripping = [r for r in reports if r.tripped]
        assert len(tripping) == 1 and set(tripping[0].reporters) == {f"i{i}" for i in sick}

    asyncio.run(run())


async def test_a_recovered_instance_withdraws_its_report() -> None:
    clock = FakeClock()
    a, b = fleet(2, 2, MemoryBackend(), clock)
    for _ in range(3):
        await call(a, fail=True)
    assert set((await b.stats()).reporters) == {"i0"}
    clock.advance(1000)  # a's local circuit lets trial calls through
    for _ in range(2):
        assert await call(a, fail=False) == "ok"
    assert a.local.state is CircuitState.CLOSED
    assert (await b.stats()).reporters == {}


async def test_reports_of_dead_instances_age_out() -> None:
    clock = FakeClock()
    a, b = fleet(2, 2, MemoryBackend(), clock)
    for _ in range(3):
        await call(a, fail=True)  # a reports, then "dies" (never calls again)
    clock.advance(501)  # past report_ttl
    for _ in range(3):
        await call(b, fail=True)
    stats = await b.stats()
    assert set(stats.reporters) == {"i1"}
    assert stats.trips == 0 and b.fleet.state is CircuitState.CLOSED


def test_bad_quorum_config_is_refused() -> None:
    with pytest.raises(ValueError, match="quorum"):
        QuorumConfig(quorum=0)
    with pytest.raises(ValueError, match="report_ttl"):
        QuorumConfig(report_ttl=-1)
    with pytest.raises(TypeError, match="backend"):
        QuorumBreaker("x", backend=object())


def _spec(url: str, name: str, instance: str, sick: bool) -> dict[str, Any]:
    return {
        "job": "quorum",
        "url": url,
        "name": name,
        "quorum": 2,
        "instance": instance,
        "sick": sick,
        "calls": 12,
    }


@pytest.mark.redis_server
async def test_one_sick_process_of_three_stops_only_itself(redis_url: str) -> None:
    answers = await run_all([_spec(redis_url, "ledger", f"p{i}", sick=i == 0) for i in range(3)])
    sick, *healthy = answers
    assert sick["local"] == "open" and sick["ran"] == 3 and sick["local_rejected"] == 9
    assert sick["fleet_events"] == []
    for answer in healthy:
        assert answer["ran"] == 12 and answer["fleet_rejected"] == 0
    async with RedisBackend.from_url(redis_url) as backend:
        stats = await QuorumBreaker(
            "ledger",
            config=BreakerConfig(failure_threshold=3, recovery_timeout=60),
            quorum=QuorumConfig(quorum=2, instance="reader", report_ttl=60),
            backend=backend,
        ).stats()
    assert stats.fleet.state is CircuitState.CLOSED
    assert stats.trips == 0 and list(stats.reporters) == ["p0"]


@pytest.mark.redis_server
async def test_two_sick_processes_open_the_fleet_circuit_once(redis_url: str) -> None:
    answers = await run_all([_spec(redis_url, "ledger", f"p{i}", sick=True) for i in range(2)])
    assert all(a["local"] == "open" for a in answers)
    # A third, healthy process started afterwards is refused by the fleet circuit at once.
    (late,) = await run_all([_spec(redis_url, "ledger", "p2", sick=False)])
    assert late["ran"] == 0 and late["fleet_rejected"] == 12
    async with RedisBackend.from_url(redis_url) as backend:
        stats = await QuorumBreaker(
            "ledger",
            config=BreakerConfig(failure_threshold=3, recovery_timeout=60),
            quorum=QuorumConfig(quorum=2, instance="reader", report_ttl=60),
            backend=backend,
        ).stats()
    assert stats.fleet.state is CircuitState.OPEN
    assert stats.trips == 1 and stats.fleet.failure_count == 1  # opened exactly once
    assert set(stats.last_trip_instances) == {"p0", "p1"}
    assert sorted(stats.reporters) == ["p0", "p1"]


@pytest.mark.redis_server
async def test_a_trip_that_opens_nothing_is_released(redis_url: str) -> None:
    # At the trip the fleet circuit is half-open with its one trial slot taken (a call in
    # flight in another process), so the trip cannot open it: it is released, not counted,
    # and a later report with the quorum still live opens the fleet circuit.
    config = BreakerConfig(failure_threshold=3, recovery_timeout=0.2, half_open_max_calls=1)
    async with RedisBackend.from_url(redis_url) as backend, RedisBackend.from_url(redis_url) as far:
        a, b = (
            QuorumBreaker(
                "ledger",
                config=config,
                quorum=QuorumConfig(quorum=2, instance=name, report_ttl=60),
                backend=backend,
            )
            for name in ("a", "b")
        )
        reports: list[QuorumReported] = []
        a.add_listener(reports.append)
        b.add_listener(reports.append)
        for _ in range(3):
            assert await call(a, fail=True) == "failed"  # a reports; 1 of 2
        for _ in range(2):
            assert await call(b, fail=True) == "failed"
        gate, running = asyncio.Event(), asyncio.Event()

        async def last_failure() -> None:  # b's third failure, still running below
            with contextlib.suppress(Down):
                async with b:
                    running.set()
                    await gate.wait()
                    raise Down()

        task = asyncio.create_task(last_failure())
        await running.wait()
        # Meanwhile another process opened the fleet circuit, and its trial call after the
        # recovery timeout holds the one trial slot.
        elsewhere = CircuitBreaker("ledger", config=fleet_config(config), backend=far)
        await fail(elsewhere)

        async def trial_taken() -> bool:
            try:
                await elsewhere.__aenter__()
            except CircuitOpenError:
                return False
            return True

        await eventually(trial_taken, what="the trial slot taken after the recovery timeout")
        gate.set()
        await task  # b's local circuit opens: b reports, the trip finds no slot to open it
        assert [(r.instance, r.tripped) for r in reports] == [("a", False), ("b", False)]
        stats = await b.stats()
        assert stats.fleet.state is CircuitState.HALF_OPEN
        assert stats.trips == 0 and sorted(stats.reporters) == ["a", "b"]
        await elsewhere.__aexit__(None, None, None)  # the trial call ends: its slot is free

        async def a_reports_again() -> bool:  # a's local circuit: half-open, fails, reopens
            await call(a, fail=True)
            return len(reports) > 2

        await eventually(a_reports_again, what="a's local circuit reopening")
        assert [(r.instance, r.tripped) for r in reports[2:]] == [("a", True)]
        stats = await b.stats()
    assert stats.fleet.state is CircuitState.OPEN
    assert stats.trips == 1 and set(stats.last_trip_instances) == {"a", "b"}
