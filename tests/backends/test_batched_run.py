"""Batched recording's inline success (``SuccessRun``) sends what the slow path sends.

A batched Redis breaker counts an untimed success of the open run's generation inline in
``CircuitBreaker.__aexit__`` (``run.count += 1``) instead of buffering one item per call. These
tests pin that the batches reaching ``breaker.lua`` are, call for call and in order, the ones
``handle.record`` builds one outcome at a time (and the ones the test's own model expects),
whatever the interleaving of failures, generation changes, timed flushes, flushes in flight
and a fail-open outage. No Redis is needed: a stub host records the script calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aioresil import BreakerConfig, CircuitBreaker, CircuitState
from aioresil.backends.base import NO_RUN
from aioresil.backends.redis_breaker import RedisBreakerHandle
from aioresil.core.machine import Outcome, Permit

from ..helpers import Boom

Sent = list[tuple[int, str, int]]
"""One entry per call the script applied: (generation, outcome digit, duration in us)."""


class StubHost:
    """The handle's :class:`~aioresil.backends.redis_breaker.BreakerHost`, without Redis: every
    script call is recorded, suspends once (a round trip) and answers "closed"."""

    clock = None
    events_channel = "events"

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.generation = 1
        self.fingerprint = b""
        self.tasks: set[asyncio.Task[None]] = set()

    def key(self, kind: str, name: str, part: str) -> str:
        return f"{kind}:{name}:{part}"

    async def run_script(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        self.calls.append(list(args))
        await asyncio.sleep(0)  # other calls end while this one is in flight
        return [1, b"closed", self.generation, -1, 0, b"", b"", 0, self.fingerprint, b""]

    def ensure_listener(self) -> None:
        pass

    def track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def ping(self) -> None:
        pass

    async def read_views(self, handles: Sequence[Any]) -> list[tuple[str, int, int]]:
        return [("closed", self.generation, -1)]

    def sent(self) -> Sent:
        out: Sent = []
        for args in self.calls:
            if args[0] != b"batch":
                continue
            generation, outcomes, durations = int(args[5]), str(args[6]), str(args[7])
            times = [int(d) for d in durations.split(",")] if durations else [0] * len(outcomes)
            assert len(times) == len(outcomes)
            out.extend((generation, digit, us) for digit, us in zip(outcomes, times, strict=True))
        return out


class StubBackend:
    """Just enough of a backend for ``CircuitBreaker(backend=...)``: binds one handle."""

    def __init__(self, config: BreakerConfig) -> None:
        self.host = StubHost()
        self.handle = RedisBreakerHandle(self.host, "b", config)  # type: ignore[arg-type]
        self.host.fingerprint = self.handle.fingerprint.encode()
        self.handle.view.state = CircuitState.CLOSED
        self.handle.view.generation = 1

    def bind_breaker(self, name: str, config: BreakerConfig) -> RedisBreakerHandle:
        return self.handle


def breaker_on(backend: StubBackend, config: BreakerConfig) -> CircuitBreaker:
    return CircuitBreaker("b", config=config, backend=backend)  # type: ignore[arg-type]


STEPS = st.lists(
    st.sampled_from(
        [
            "success",
            "success",
            "success",
            "timed_success",  # a success whose duration matters (slow-call rule, observer)
            "failure",
            "ignored",
            "stale_success",  # entered under one generation, ended under the next
            "new_generation",
            "flush",
            "tick",  # let timed and "at once" flushes run
        ]
    ),
    max_size=60,
)

CONFIGS = [
    BreakerConfig(recording="batched", batch_interval=0.0005, ignore_exceptions=(KeyError,)),
    BreakerConfig(
        recording="batched",
        batch_interval=0.0005,
        window_duration=4.0,
        failure_rate_threshold=0.5,
        ignore_exceptions=(KeyError,),
    ),
]


async def run_steps(config: BreakerConfig, steps: list[str]) -> tuple[Sent, Sent, Sent]:
    """The same steps through the breaker (inline path), through ``handle.record`` one outcome
    at a time, and in the test's model; each as the calls the script applied."""
    inline, slow = StubBackend(config), StubBackend(config)
    breaker = breaker_on(inline, config)
    expected: Sent = []
    timed = config.timed
    for step in steps:
        g = inline.handle.view.generation
        if step == "success":
            async with breaker:
                pass
            slow.handle.record(Permit(g), Outcome.SUCCESS, 0.0, 0.0)
            expected.append((g, "0", 0))
        elif step == "timed_success":
            inline.handle.success_fast(g, 0.0, 0.25)
            slow.handle.record(Permit(g), Outcome.SUCCESS, 0.0, 0.25)
            expected.append((g, "0", 250_000 if timed else 0))
        elif step in ("failure", "ignored"):
            error: Exception = Boom() if step == "failure" else KeyError("x")
            try:
                async with breaker:
                    raise error
            except (Boom, KeyError):
                pass
            outcome = Outcome.FAILURE if step == "failure" else Outcome.IGNORED
            slow.handle.record(Permit(g), outcome, 0.0, 0.0)
            expected.append((g, str(int(outcome)), 0))
        elif step in ("stale_success", "new_generation"):
            async with breaker:
                for backend in (inline, slow):
                    backend.handle.view.generation = backend.host.generation = g + 1
            slow.handle.record(Permit(g), Outcome.SUCCESS, 0.0, 0.0)
            expected.append((g, "0", 0))
            if step == "new_generation":  # and a success under the new one
                async with breaker:
                    pass
                slow.handle.record(Permit(g + 1), Outcome.SUCCESS, 0.0, 0.0)
                expected.append((g + 1, "0", 0))
        elif step == "flush":
            await inline.handle.flush()
        else:
            await asyncio.sleep(0.001)
    for backend in (inline, slow):
        await backend.handle.flush()
        await asyncio.gather(*backend.host.tasks)
        await backend.handle.flush()
        assert not backend.handle.needs_flush
        assert backend.handle.success_run is not None
        assert backend.handle.success_run.count == 0
        backend.handle.cancel_timers()
    return inline.host.sent(), slow.host.sent(), expected


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, which=st.sampled_from([0, 1]))
def test_the_inline_batched_success_sends_what_the_slow_path_sends(
    steps: list[str], which: int
) -> None:
    inline, slow, expected = asyncio.run(run_steps(CONFIGS[which], steps))
    assert inline == expected
    assert slow == expected


async def test_a_run_of_successes_is_counted_inline_and_sent_as_one_batch() -> None:
    config = CONFIGS[0]
    backend = StubBackend(config)
    breaker = breaker_on(backend, config)
    run = backend.handle.success_run
    assert run is not None and run.generation == NO_RUN
    for _ in range(1000):
        async with breaker:
            pass
    assert (run.generation, run.count) == (1, 1000)  # counted, nothing buffered per call
    await backend.handle.flush()
    assert backend.host.sent() == [(1, "0", 0)] * 1000
    assert len(backend.host.calls) == 1
    assert (run.generation, run.count) == (NO_RUN, 0)
    backend.handle.cancel_timers()


async def test_successes_counted_before_a_fail_open_outage_are_sent_after_it_the_rest_not() -> None:
    config = BreakerConfig(recording="batched", batch_interval=60)
    backend = StubBackend(config)
    breaker = breaker_on(backend, config)
    handle = backend.handle
    for _ in range(3):
        async with breaker:
            pass
    async with breaker:  # entered before the outage, ends during it: dropped, as before
        handle.backend_down("injected")
    assert handle.view.generation < 0  # judged by the fail-open fallback now
    for _ in range(2):
        async with breaker:  # the fallback's successes: never sent to Redis
            pass
    assert handle.success_run is not None and handle.success_run.count == 0
    assert backend.host.sent() == []
    await handle.backend_back()
    await asyncio.gather(*backend.host.tasks)
    await handle.flush()
    assert backend.host.sent() == [(1, "0", 0)] * 3
    handle.cancel_timers()
