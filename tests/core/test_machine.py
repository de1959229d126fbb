"""Property tests of the pure core: invariants, windows against naive models, and the hot paths.

The breaker's hot paths (``record_success`` and the inlined success in
``CircuitBreaker.__aexit__``) must leave exactly the record the general ``record()`` leaves.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from typing import Any

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState, MemoryBackend
from aioresil.core import machine
from aioresil.core.machine import BreakerRecord, Outcome, Permit, Rejection
from aioresil.core.states import TRANSITIONS, Trigger
from aioresil.core.window import TIME_WINDOW_BUCKETS, CountWindow, TimeWindow
from aioresil.testing import FakeClock


def run_sync(awaitable: Awaitable[Any]) -> Any:
    """Await something that never suspends (memory backend) without an event loop: a
    coroutine, or the ready awaitable a breaker's hot ``__aenter__``/``__aexit__`` returns."""
    try:
        awaitable.__await__().send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("coroutine suspended")  # pragma: no cover


BOOKKEEPING = ("framed", "loose", "loose_generation", "ticketed", "window")
"""The breaker layer's count of calls in flight (not state), and the window (compared below)."""


def fields(rec: BreakerRecord) -> dict[str, Any]:
    out = {name: getattr(rec, name) for name in BreakerRecord.__slots__ if name not in BOOKKEEPING}
    out["trials"] = dict(rec.trials)
    if rec.window is not None:
        out["window"] = (rec.window.calls, rec.window.failures, rec.window.slow)
    return out


def valid_config(**kw: Any) -> BreakerConfig:
    """The config of ``kw``; examples whose combination is invalid are discarded (``assume``),
    so Hypothesis generates more valid ones instead of counting them as passed."""
    try:
        return BreakerConfig(**kw)
    except ValueError:
        assume(False)
        raise  # pragma: no cover - assume(False) does not return


config_kwargs = st.fixed_dictionaries(
    {
        "failure_threshold": st.one_of(st.none(), st.integers(1, 4)),
        "failure_rate_threshold": st.sampled_from([None, 0.25, 0.5, 1.0]),
        "window_size": st.sampled_from([None, 3, 8]),
        "window_duration": st.sampled_from([None, None, 4.0]),
        "minimum_calls": st.integers(1, 3),
        "recovery_timeout": st.sampled_from([1.0, 2.5]),
        "backoff_multiplier": st.sampled_from([1.0, 2.0]),
        "half_open_max_calls": st.integers(1, 3),
        "success_threshold": st.integers(1, 3),
        "trial_lease": st.sampled_from([0.5, 5.0]),
    }
)

Op = tuple[str, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "acquire",
                "success",
                "failure",
                "ignored",
                "cancel",
                "advance",
                "reset",
                "force_open",
                "disable",
            ]
        ),
        st.integers(0, 7),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(config_kwargs, ops)
def test_invariants_hold_for_any_sequence(kw: dict[str, Any], sequence: list[Op]) -> None:
    config = valid_config(**kw)
    rec = BreakerRecord(config)
    now = 0.0
    held: list[Permit] = []
    outcomes = {
        "success": Outcome.SUCCESS,
        "failure": Outcome.FAILURE,
        "ignored": Outcome.IGNORED,
        "cancel": Outcome.CANCELLED,
    }
    for op, arg in sequence:
        before = rec.state
        transition = None
        if op == "acquire":
            decision, transition = machine.acquire(rec, config, now)
            if isinstance(decision, Permit):
                held.append(decision)
            else:
                assert isinstance(decision, Rejection)
                assert decision.state in (
                    CircuitState.OPEN,
                    CircuitState.HALF_OPEN,
                    CircuitState.FORCED_OPEN,
                )
        elif op in outcomes and held:
            permit = held.pop(arg % len(held))
            transition = machine.record(rec, config, permit, outcomes[op], now)
        elif op == "advance":
            now += arg * 0.5
        elif op in ("reset", "force_open", "disable"):
            transition = machine.operator(rec, Trigger(op), now)
        if transition is not None:
            assert transition.old is before
            assert TRANSITIONS[(transition.old, transition.trigger)] is transition.new
            assert transition.new is rec.state
        else:
            assert rec.state is before
        # invariants
        assert len(rec.trials) <= config.half_open_max_calls
        if rec.state is not CircuitState.HALF_OPEN:
            assert not rec.trials
        if rec.state is CircuitState.CLOSED and config.failure_threshold is not None:
            assert rec.consecutive_failures < config.failure_threshold
        assert rec.total_calls == rec.successes + rec.failures + rec.ignored
        if rec.state is CircuitState.OPEN:
            assert rec.open_until > (rec.opened_at or 0) or rec.open_until == rec.opened_at
        if rec.window is not None:
            assert 0 <= rec.window.failures <= rec.window.calls


# The slow-call rule is the one branch where a success can trip the circuit: half of the
# examples carry it, and calls take 0 to 2 s around its 1 s limit.
slow_rule = st.sampled_from([{}, {"slow_call_duration": 1.0, "slow_call_rate_threshold": 0.5}])


@settings(max_examples=300, deadline=None)
@given(
    config_kwargs,
    slow_rule,
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 3), st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        max_size=40,
    ),
)
def test_record_success_matches_general_record(
    kw: dict[str, Any], slow: dict[str, Any], steps: list[tuple[bool, int, float]]
) -> None:
    config = valid_config(**kw, **slow)
    general, fast = BreakerRecord(config), BreakerRecord(config)
    now = 0.0
    for is_success, advance, duration in steps:
        now += advance
        for rec in (general, fast):
            decision, _ = machine.acquire(rec, config, now)
        if not isinstance(decision, Permit) or decision.token:
            # trials take the general path in both; keep the twins in step
            if isinstance(decision, Permit):
                outcome = Outcome.SUCCESS if is_success else Outcome.FAILURE
                machine.record(general, config, decision, outcome, now)
                machine.record(fast, config, decision, outcome, now)
            continue
        if is_success:
            t1 = machine.record(general, config, decision, Outcome.SUCCESS, now, duration)
            t2 = machine.record_success(fast, config, decision.generation, now, duration)
            assert t1 == t2
            if t1 is not None:
                event("a success tripped the circuit (slow-call rule)")
        else:
            machine.record(general, config, decision, Outcome.FAILURE, now, duration)
            machine.record(fast, config, decision, Outcome.FAILURE, now, duration)
        assert fields(general) == fields(fast)


@settings(max_examples=200, deadline=None)
@given(
    config_kwargs,
    st.lists(st.tuples(st.sampled_from(["ok", "fail", "tick"]), st.integers(0, 3)), max_size=40),
)
def test_memory_breaker_hot_path_matches_the_pure_machine(
    kw: dict[str, Any], steps: list[tuple[str, int]]
) -> None:
    config = valid_config(**kw)
    clock = FakeClock(start=0.0)
    breaker = CircuitBreaker("m", config=config, backend=MemoryBackend(), clock=clock)
    twin = BreakerRecord(config)

    class Boom(Exception):
        pass

    for op, arg in steps:
        if op == "tick":
            clock.advance(arg)
            continue
        now = clock.monotonic()
        decision, _ = machine.acquire(twin, config, now)
        try:
            run_sync(breaker.__aenter__())
        except Exception as error:
            assert isinstance(decision, Rejection), error
            continue
        assert isinstance(decision, Permit)
        if op == "ok":
            run_sync(breaker.__aexit__(None, None, None))
            machine.record(twin, config, decision, Outcome.SUCCESS, now)
        else:
            error = Boom()
            run_sync(breaker.__aexit__(Boom, error, None))
            machine.record(twin, config, decision, Outcome.FAILURE, now)
        assert fields(breaker._view) == fields(twin)
        assert (breaker._view.loose, breaker._view.ticketed) == (0, 0)


@given(st.integers(1, 6), st.lists(st.tuples(st.booleans(), st.booleans()), max_size=80))
def test_count_window_matches_a_naive_list(size: int, outcomes: list[tuple[bool, bool]]) -> None:
    window = CountWindow(size)
    seen: list[tuple[bool, bool]] = []
    for step, (failed, slow) in enumerate(outcomes):
        if failed or slow:
            window.add(failed, slow)
        elif step % 3 == 1:
            window.add_success()
        elif step % 3 == 2:
            if not window.spotless:  # what the breaker's hot path does
                window.add_success()
        else:
            window.add(failed, slow)
        seen.append((failed, slow))
        last = seen[-size:]
        assert window.calls == len(last)
        assert window.failures == sum(f for f, _ in last)
        assert window.slow == sum(s for _, s in last)
        assert window.spotless == (len(last) == size and not any(f or s for f, s in last))


@given(
    st.sampled_from([1.0, 10.0, 60.0]),
    st.lists(st.tuples(st.floats(0, 5), st.booleans(), st.booleans()), max_size=50),
)
def test_time_window_matches_a_naive_bucket_recount(
    duration: float, steps: list[tuple[float, bool, bool]]
) -> None:
    import math

    window = TimeWindow(duration)
    width = duration / TIME_WINDOW_BUCKETS
    now = 100.0
    seen: list[tuple[int, bool, bool]] = []
    for advance, failed, slow in steps:
        now += advance
        if not failed and not slow and len(seen) % 2:
            window.add_success_at(now)  # the breaker's hot path
        else:
            window.add(failed, slow, now)
        seen.append((math.floor(now / width), failed, slow))
        current = math.floor(now / width)
        kept = [s for s in seen if s[0] > current - TIME_WINDOW_BUCKETS]
        assert window.calls == len(kept)
        assert window.failures == sum(f for _, f, _ in kept)
        assert window.slow == sum(s for _, _, s in kept)


class StaleOutcomes(RuleBasedStateMachine):
    """Outcomes of permits from an older generation change totals, never the state."""

    def __init__(self) -> None:
        super().__init__()
        self.config = BreakerConfig(failure_threshold=2, recovery_timeout=1, success_threshold=2)
        self.rec = BreakerRecord(self.config)
        self.now = 0.0
        self.old: list[Permit] = []

    @rule()
    def take_and_shelve(self) -> None:
        decision, _ = machine.acquire(self.rec, self.config, self.now)
        if isinstance(decision, Permit) and not decision.token:
            self.old.append(decision)

    @rule(failed=st.booleans())
    def fresh_call(self, failed: bool) -> None:
        decision, _ = machine.acquire(self.rec, self.config, self.now)
        if isinstance(decision, Permit):
            machine.record(
                self.rec,
                self.config,
                decision,
                Outcome.FAILURE if failed else Outcome.SUCCESS,
                self.now,
            )

    @rule()
    def tick(self) -> None:
        self.now += 0.5

    @rule(failed=st.booleans())
    def late_outcome(self, failed: bool) -> None:
        stale = [p for p in self.old if p.generation != self.rec.generation]
        if not stale:
            return
        self.old.remove(stale[0])
        before = fields(self.rec)
        machine.record(
            self.rec,
            self.config,
            stale[0],
            Outcome.FAILURE if failed else Outcome.SUCCESS,
            self.now,
        )
        after = fields(self.rec)
        for key in ("state", "generation", "consecutive_failures", "trials", "trial_successes"):
            assert before[key] == after[key]

    @invariant()
    def trials_bounded(self) -> None:
        assert len(self.rec.trials) <= self.config.half_open_max_calls


TestStaleOutcomes = StaleOutcomes.TestCase


class _Failing(Exception):
    pass


class _Ignored(Exception):
    pass


_EXITS: dict[str, tuple[type[BaseException] | None, Outcome]] = {
    "ok": (None, Outcome.SUCCESS),
    "fail": (_Failing, Outcome.FAILURE),
    "ignored": (_Ignored, Outcome.IGNORED),
    "cancel": (asyncio.CancelledError, Outcome.CANCELLED),
}


class CallsInFlight(RuleBasedStateMachine):
    """Many calls of one circuit in flight at once, in many contexts (tasks, and tasks started
    inside a call, which inherit its ticket), through a plain instance (loose calls) and an
    observed one (every call ticketed); transitions and time in between; calls ended in any
    order across contexts (last-in first-out within one, as ``async with`` does). The record
    must stay what the pure machine gives with each call judged by the permit it was granted,
    and the view's count of calls in flight must match the calls open."""

    @initialize(
        kw=st.sampled_from(
            [
                {"failure_threshold": 2},
                {"window_size": 3, "failure_rate_threshold": 0.5, "minimum_calls": 2},
                {"window_duration": 4.0, "failure_rate_threshold": 0.5, "minimum_calls": 2},
                {"slow_call_duration": 1.0, "slow_call_rate_threshold": 0.5, "minimum_calls": 2},
            ]
        ),
        trials=st.integers(1, 3),
    )
    def setup(self, kw: dict[str, Any], trials: int) -> None:
        self.config = BreakerConfig(
            **kw, half_open_max_calls=trials, recovery_timeout=5, ignore_exceptions=(_Ignored,)
        )
        self.clock = FakeClock(start=0.0)
        backend = MemoryBackend()
        self.plain = CircuitBreaker("m", config=self.config, backend=backend, clock=self.clock)
        self.observed = CircuitBreaker("m", config=self.config, backend=backend, clock=self.clock)
        self.observed.add_call_observer(lambda name, outcome, seconds: None)
        self.twin = BreakerRecord(self.config)
        self.contexts = [contextvars.Context()]
        self.open: list[list[tuple[CircuitBreaker, Permit, float]]] = [[]]

    def enter_in(self, at: int, observed: bool) -> None:
        breaker = self.observed if observed else self.plain
        now = self.clock.monotonic()
        decision, _ = machine.acquire(self.twin, self.config, now)
        try:
            self.contexts[at].run(lambda: run_sync(breaker.__aenter__()))
        except CircuitOpenError:
            assert isinstance(decision, Rejection)
            return
        assert isinstance(decision, Permit), decision
        self.open[at].append((breaker, decision, now))

    def exit_at(self, at: int, how: str) -> None:
        breaker, permit, started = self.open[at].pop()
        exc_type, outcome = _EXITS[how]
        now = self.clock.monotonic()
        exc = None if exc_type is None else exc_type()
        self.contexts[at].run(lambda: run_sync(breaker.__aexit__(exc_type, exc, None)))
        machine.record(self.twin, self.config, permit, outcome, now, now - started)

    @rule(data=st.data())
    def start_task(self, data: st.DataObject) -> None:
        parent = data.draw(st.integers(0, len(self.contexts) - 1))
        self.contexts.append(self.contexts[parent].copy())  # what create_task does
        self.open.append([])

    @rule(data=st.data(), observed=st.booleans())
    def enter(self, data: st.DataObject, observed: bool) -> None:
        self.enter_in(data.draw(st.integers(0, len(self.contexts) - 1)), observed)

    @rule(data=st.data(), how=st.sampled_from(sorted(_EXITS)))
    def leave(self, data: st.DataObject, how: str) -> None:
        live = [i for i, calls in enumerate(self.open) if calls]
        if live:
            self.exit_at(data.draw(st.sampled_from(live)), how)

    @rule()
    def failures_until_open(self) -> None:
        for _ in range(8):
            if self.twin.state is not CircuitState.CLOSED:
                return
            self.contexts.append(contextvars.Context())
            self.open.append([])
            self.enter_in(len(self.contexts) - 1, False)
            if self.open[-1]:
                self.exit_at(len(self.contexts) - 1, "fail")

    @rule(trigger=st.sampled_from([Trigger.RESET, Trigger.FORCE_OPEN, Trigger.DISABLE]))
    def operator(self, trigger: Trigger) -> None:
        now = self.clock.monotonic()
        run_sync(self.plain._handle.operator(trigger, now))
        machine.operator(self.twin, trigger, now)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 6.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def judged_by_the_permit_that_granted_it(self) -> None:
        view = self.plain._view
        assert fields(view) == fields(self.twin)
        assert view.loose + view.ticketed == sum(len(calls) for calls in self.open)
        assert view.loose >= 0 and view.ticketed >= 0 and view.framed == 0
        if view.loose and view.loose_generation != view.generation:
            event("loose calls of an older generation in flight")
        if view.loose and view.trials:
            event("trials beside loose calls of CLOSED")


TestCallsInFlight = CallsInFlight.TestCase
TestCallsInFlight.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
