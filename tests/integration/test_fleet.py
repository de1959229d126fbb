"""A fleet on one real Redis: several worker processes share one breaker by name.

Each worker is a separate Python process (``tests/workers/fleet_worker.py``) with its own
``RedisBackend`` and its own copy of the breaker, so nothing is shared but the server. These
tests pin what a single process cannot show: that the Lua scripts serialise concurrent
processes (one transition per threshold crossing, exact counts, a fleet-wide bound on trial
calls), that a crashed trial holder only blocks the breaker for its lease, that a transition
reaches the other processes' local views by pub/sub, and that decisions use Redis ``TIME``
rather than each process's own clock.

Cross-process instants use ``time.time()``: every process runs on this one host, so the wall
clock is one time base. Timing figures are printed (``-s``), never asserted beyond liveness;
``benchmarks/bench_redis_breaker.py`` measures them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aioresil import (
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    StateChanged,
    Trigger,
)
from aioresil.backends.redis import RedisBackend

from ..fleet import Worker
from ..helpers import eventually, wait_for_subscribers

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

TRIP = ["closed", "open", "trip"]


class Boom(Exception):
    """The failure of a guarded call made by the test process itself."""


Spawn = Callable[..., list[Worker]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(n, url=..., name=..., config={...})``: n ready workers, stopped at teardown."""
    started: list[Worker] = []

    def start(count: int, **spec: Any) -> list[Worker]:
        batch = [Worker(spec, tmp_path / f"worker-{len(started) + i}.log") for i in range(count)]
        started.extend(batch)
        for worker in batch:
            assert worker.receive()["event"] == "ready"
        return batch

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
async def observer(redis_url: str) -> AsyncIterator[RedisBackend]:
    """The test process's own backend (no listener: it only trips and reads)."""
    backend = RedisBackend.from_url(redis_url, listen=False)
    try:
        yield backend
    finally:
        await backend.aclose()
        await backend.client.connection_pool.aclose()


async def trip(breaker: CircuitBreaker) -> tuple[float, float]:
    """Fail one call through ``breaker`` (threshold 1).

    Returns the wall times just before the failure was sent and when the reply that opened
    the circuit arrived (the listener runs as the reply is applied).
    """
    tripped: list[float] = []
    sent = 0.0

    def on_event(event: object) -> None:
        if isinstance(event, StateChanged) and event.new is CircuitState.OPEN:
            tripped.append(time.time())

    breaker.add_listener(on_event)
    try:
        async with breaker:
            sent = time.time()
            raise Boom
    except Boom:
        pass
    breaker.remove_listener(on_event)
    assert len(tripped) == 1, "the test's own failure must trip the circuit"
    return sent, tripped[0]


async def generation(backend: RedisBackend, name: str) -> int:
    return int(await backend.client.hget(backend.key("cb", name, "state"), "g"))


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal non-negative ints."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --------------------------------------------------------------------------- one trip


async def test_eight_processes_failing_at_once_count_every_failure_and_trip_once_at_the_threshold(
    redis_url: str, observer: RedisBackend, spawn: Spawn
) -> None:
    threshold, processes, tasks = 1000, 8, 50
    config = {"failure_threshold": threshold, "recovery_timeout": 3600}
    fleet = spawn(processes, url=redis_url, name="fleet-trip", config=config)
    breaker = CircuitBreaker("fleet-trip", config=BreakerConfig(**config), backend=observer)

    # Phase 1: one failure short of the threshold, 400 tasks in 8 processes at once.
    shares = split(threshold - 1, processes * tasks)
    for i, worker in enumerate(fleet):
        worker.send("fail", tasks=shares[i * tasks : (i + 1) * tasks])
    below = [await worker.areceive() for worker in fleet]
    assert sum(a["ran"] for a in below) == threshold - 1
    assert sum(a["rejected"] for a in below) == 0
    assert all(a["events"] == [] for a in below)
    stats = await breaker.stats()
    assert stats.state is CircuitState.CLOSED
    assert stats.failure_count == threshold - 1  # no increment lost between processes
    assert stats.consecutive_failures == threshold - 1
    created = await generation(observer, "fleet-trip")  # the creation time in us (breaker.lua)
    assert created > 1

    # Phase 2: everyone keeps failing; the next counted failure is the 1000th.
    per_task = 3
    for worker in fleet:
        worker.send("fail", tasks=[per_task] * tasks)
    above = [await worker.areceive() for worker in fleet]
    attempts = processes * tasks * per_task
    ran = sum(a["ran"] for a in above)
    rejected = sum(a["rejected"] for a in above)
    assert sum(a["attempts"] for a in above) == attempts
    assert ran + rejected == attempts
    # Once a task's first reply of phase 2 lands (the trip is the first record of phase 2),
    # its process's view is OPEN: no task gets a second failure through.
    assert max(a["max_ran_per_task"] for a in above) == 1
    trips = [a["events"].count(TRIP) for a in above]
    assert sum(trips) == 1, f"opened once fleet-wide, got per-process trips {trips}"
    assert all(e == TRIP for a in above for e in a["events"]), "no other transition"
    stats = await breaker.stats()
    assert stats.state is CircuitState.OPEN
    assert await generation(observer, "fleet-trip") == created + 1  # exactly one transition
    assert stats.failure_count == threshold - 1 + ran  # every recorded failure counted once
    # 999 were counted before phase 2 and one more opened the circuit: it opened at the
    # threshold. The rest ran on permits granted before the news reached their task.
    print(
        f"\n{ran} failures ran in phase 2 (1 tripped, {ran - 1} were in flight), "
        f"{rejected} of {attempts} attempts rejected"
    )


# --------------------------------------------------------------------------- half-open


async def test_racing_processes_never_run_more_trials_at_once_than_half_open_max_calls(
    redis_url: str, observer: RedisBackend, spawn: Spawn
) -> None:
    recovery, race = 0.3, 1.0
    config = {
        "failure_threshold": 1,
        "recovery_timeout": recovery,
        "half_open_max_calls": 2,
        "success_threshold": 1_000_000,  # stay HALF_OPEN: every call that runs is a trial
        "trial_lease": 30,
    }
    fleet = spawn(8, url=redis_url, name="fleet-half-open", config=config)
    breaker = CircuitBreaker("fleet-half-open", config=BreakerConfig(**config), backend=observer)
    gauge = "test:gauge"
    _, tripped_at = await trip(breaker)
    for worker in fleet:
        worker.send("trials", until=tripped_at + recovery + race, hold=0.05, gauge=gauge)
    answers = [await worker.areceive() for worker in fleet]

    trials = sum(a["trials"] for a in answers)
    peak = int(await observer.client.get(gauge + ":peak") or 0)
    print(
        f"\n{trials} trials, peak concurrency {peak}, per process {[a['trials'] for a in answers]}"
    )
    assert trials >= 1
    assert 1 <= peak <= 2
    assert int(await observer.client.get(gauge + ":now")) == 0
    stats = await breaker.stats()
    assert stats.state is CircuitState.HALF_OPEN
    assert stats.success_count == trials  # each trial reported back exactly once
    assert stats.half_open_calls == 0  # every lease given back


# --------------------------------------------------------------------------- crashed trial


async def test_a_sigkilled_trial_holder_blocks_the_fleet_only_until_its_lease_expires(
    redis_url: str, observer: RedisBackend, spawn: Spawn
) -> None:
    lease = 1.0
    config = {
        "failure_threshold": 1,
        "recovery_timeout": 0.2,
        "half_open_max_calls": 1,
        "success_threshold": 1,
        "trial_lease": lease,
    }
    holder, *others = spawn(4, url=redis_url, name="fleet-lease", config=config)
    breaker = CircuitBreaker("fleet-lease", config=BreakerConfig(**config), backend=observer)
    await trip(breaker)
    holder.send("hold", flag="test:holder")
    held = await holder.areceive()
    assert held["holding"] is True
    granted_no_earlier_than = held["started"]  # the lease deadline is >= this + lease
    assert float(await observer.client.get("test:holder")) == granted_no_earlier_than

    os.kill(holder.pid, signal.SIGKILL)
    killed_at = time.time()
    assert holder.process.wait(timeout=5) == -signal.SIGKILL
    for worker in others:
        worker.send("probe", until=killed_at + lease + 5, interval=0.02)
    answers = [await worker.areceive() for worker in others]

    attempts = [attempt for a in answers for attempt in a["attempts"]]
    successes = [after for _, after, outcome in attempts if outcome == "ok"]
    assert successes, "the breaker never recovered"
    for before, after, outcome in attempts:
        if after < granted_no_earlier_than + lease:
            assert outcome == "rejected:half_open", (before, after, outcome)
    assert min(successes) >= granted_no_earlier_than + lease
    blocked = [a for a in attempts if a[2] != "ok"]
    assert blocked, "nobody tried while the dead holder's lease ran"
    print(
        f"\nfirst success {min(successes) - granted_no_earlier_than:.3f} s after the holder's "
        f"grant (lease {lease} s); {len(blocked)} attempts rejected meanwhile"
    )
    stats = await breaker.stats()
    assert stats.state is CircuitState.CLOSED
    assert stats.half_open_calls == 0


# --------------------------------------------------------------------------- propagation


async def test_a_trip_in_one_process_reaches_every_other_processs_local_view(
    redis_url: str, observer: RedisBackend, spawn: Spawn
) -> None:
    config = {"failure_threshold": 1, "recovery_timeout": 3600}
    fleet = spawn(4, url=redis_url, name="shared", config=config)
    breaker = CircuitBreaker("shared", config=BreakerConfig(**config), backend=observer)
    for worker in fleet:
        worker.send("warm")
    warmed = [await worker.areceive() for worker in fleet]
    assert [a["state"] for a in warmed] == ["closed"] * len(fleet)
    await wait_for_subscribers(observer, len(fleet))

    watching = f"test:watching:{os.getpid()}:{time.time()}"
    for worker in fleet:
        worker.send("watch", until=time.time() + 10, interval=0.0005, started=watching)

    # Until every watcher is polling (it answers only once it sees OPEN): each counts itself.
    async def all_watching() -> bool:
        return int(await observer.client.get(watching) or 0) == len(fleet)

    await eventually(all_watching, what="every watcher polling")
    await observer.client.delete(watching)
    sent_at, tripped_at = await trip(breaker)
    answers = [await worker.areceive() for worker in fleet]

    assert all(a["seen"] is not None for a in answers), answers
    seen = [a["seen"] for a in answers]
    delays = [t - tripped_at for t in seen]
    # Negative: the PUBLISH inside the script reached a watcher before this process had
    # read the script's own reply (5 processes share 2 cores).
    print(
        f"\npropagation to {len(fleet)} processes after the reply: median "
        f"{statistics.median(delays) * 1e3:.2f} ms, max {max(delays) * 1e3:.2f} ms; after the "
        f"failure was sent: max {(max(seen) - sent_at) * 1e3:.2f} ms"
    )
    assert min(seen) >= sent_at  # nobody saw OPEN before the failure that caused it
    assert max(delays) < 0.5  # liveness (a poll would take seconds), not a performance claim
    assert all(a["events"] == [] for a in answers)  # they learnt it, they did not cause it


# --------------------------------------------------------------------------- skewed clocks


async def test_processes_with_clocks_a_day_apart_agree_on_the_recovery_timeout(
    redis_url: str, observer: RedisBackend, spawn: Spawn
) -> None:
    recovery = 0.3
    config = {
        "failure_threshold": 1,
        "recovery_timeout": recovery,
        "half_open_max_calls": 2,
        "success_threshold": 2,
    }
    day = 86_400.0
    (early,) = spawn(
        1,
        url=redis_url,
        name="skew",
        config=config,
        clock={"start": 1000.0, "wall_start": 1_700_000_000.0},
    )
    (late,) = spawn(
        1,
        url=redis_url,
        name="skew",
        config=config,
        clock={"start": 1000.0 + day, "wall_start": 1_700_000_000.0 + day},
    )
    # A third process, a day in the future too, makes no call before the trip: its view is
    # unknown, so its first call is decided by the script (Redis TIME), not by a local view.
    (fresh,) = spawn(
        1,
        url=redis_url,
        name="skew",
        config=config,
        clock={"start": 5.0 + day, "wall_start": 1_800_000_000.0},
    )
    for worker in (early, late):
        worker.send("warm")
        assert (await worker.areceive())["outcome"] == "ok"
    await wait_for_subscribers(observer, 2)

    early.send("fail", tasks=[1])
    tripped = await early.areceive()
    assert tripped["events"] == [TRIP]
    late.send("watch", until=time.time() + 5, interval=0.001)
    assert (await late.areceive())["seen"] is not None
    for worker in (early, late, fresh):  # a clock a day past the timeout: still rejected
        worker.send("attempt")
        assert (await worker.areceive())["outcome"] == "rejected:open"

    stats = await CircuitBreaker("skew", config=BreakerConfig(**config), backend=observer).stats()
    assert stats.retry_after is not None
    # The recovery timeout itself must pass (the behaviour under test, on Redis's clock):
    # sleeping it out is the condition; a slow machine only makes it pass more surely.
    await asyncio.sleep(stats.retry_after + 0.05)
    early.send("attempt")
    first = await early.areceive()
    late.send("attempt")
    second = await late.areceive()
    # Both ran as trial calls: the early clock's call moved OPEN -> HALF_OPEN, the late
    # clock's call was the second successful trial and closed the circuit.
    assert first["outcome"] == "ok"
    assert first["events"][-1] == ["open", "half_open", Trigger.TIMEOUT_ELAPSED.value]
    assert second["outcome"] == "ok"
    assert second["events"][-1] == ["half_open", "closed", Trigger.TRIALS_PASSED.value]


# --------------------------------------------------------------------------- counters


async def test_rejections_counted_locally_reach_redis_when_the_backend_closes(
    redis_url: str, observer: RedisBackend
) -> None:
    config = BreakerConfig(failure_threshold=1, recovery_timeout=3600)
    backend = RedisBackend.from_url(redis_url, listen=False)
    try:
        breaker = CircuitBreaker("closing", config=config, backend=backend)
        await trip(breaker)
        for _ in range(5):
            with pytest.raises(CircuitOpenError):
                async with breaker:
                    raise AssertionError("rejected calls never run")
        assert (await breaker.stats()).rejected_calls == 5  # this process knows
    finally:
        await backend.aclose()
        await backend.client.connection_pool.aclose()
    fleet_view = CircuitBreaker("closing", config=config, backend=observer)
    assert (await fleet_view.stats()).rejected_calls == 5
