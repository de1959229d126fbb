"""Model-based test: ``breaker.lua`` and the pure Python machine agree step for step.

Hypothesis drives both with the same random sequences of acquire / success / failure /
ignored / cancel / time advance / operator actions / rebinds under another config (another
process's newer bind) and compares every field after each step.
It runs against fakeredis (many examples, fast) and a real redis-server (fewer examples).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from aioresil import BreakerConfig
from aioresil.backends.breaker_schema import (
    Field,
    breaker_script,
)
from aioresil.backends.keys import object_key
from aioresil.backends.redis_breaker import binding_argument
from aioresil.core import machine
from aioresil.core.machine import BreakerRecord, Outcome, Permit, Rejection
from aioresil.core.states import Trigger
from aioresil.core.window import TimeWindow

from ..helpers import packed_row, scripts_agree

SCRIPT = breaker_script()

configs = st.builds(
    dict,
    failure_threshold=st.one_of(st.none(), st.integers(1, 4)),
    failure_rate_threshold=st.sampled_from([None, 0.25, 0.5, 1.0]),
    slow=st.booleans(),
    window=st.sampled_from(["count3", "count8", "time2", "time4", "time10"]),
    minimum_calls=st.integers(1, 3),
    recovery_timeout=st.sampled_from([1.0, 2.5]),
    backoff_multiplier=st.sampled_from([1.0, 2.0]),
    max_recovery_timeout=st.sampled_from([None, 4.0]),
    half_open_max_calls=st.integers(1, 3),
    success_threshold=st.integers(1, 3),
    trial_lease=st.sampled_from([0.5, 5.0]),
)


def build_config(raw: dict[str, Any]) -> BreakerConfig | None:
    kw = dict(raw)
    slow = kw.pop("slow")
    window = kw.pop("window")
    if slow:
        kw["slow_call_duration"] = 1.0
        kw["slow_call_rate_threshold"] = 0.5
    if kw["failure_rate_threshold"] is not None or slow:
        if window.startswith("count"):
            kw["window_size"] = int(window[5:])
        else:
            kw["window_duration"] = float(window[4:])
    try:
        return BreakerConfig(**kw)
    except ValueError:
        return None


def us(seconds: float) -> int:
    return round(seconds * 1_000_000)


class LuaAgreesWithPython(RuleBasedStateMachine):
    client: Any = None  # set by the test functions below

    @initialize(raw=configs)
    def setup(self, raw: dict[str, Any]) -> None:
        config = build_config(raw)
        if config is None:
            config = BreakerConfig(failure_threshold=2)
        self.config = config
        self.rec = BreakerRecord(config)
        self.now = 1000.0
        self.held: list[Permit] = []
        parts = ("state", "trials", "window", "row")
        self.keys = [object_key("model", "cb", "m", part) for part in parts]
        self.client.delete(*self.keys)
        self.bound = False
        self.lua("operator", "reset")
        # A state the script creates starts at generation = its creation time in microseconds
        # (so a state Redis lost and made again is newer than the lost one; breaker.lua).
        self.rec.generation = us(self.now)
        machine.operator(self.rec, Trigger.RESET, self.now)

    def lua(self, op: str, *extra: Any) -> Any:
        # Like a breaker: the config travels on the first call (the bind), then only its
        # fingerprint, so the script's hot path ("success") is exercised too.
        config = self.config
        binding = b"" if self.bound else binding_argument(config, "", "m")
        self.bound = True
        args = [op, us(self.now), config.fingerprint, binding, 0, *extra]
        reply = self.client.evalsha(SCRIPT.sha, 4, *self.keys, *args)
        return reply if reply == 1 else list(reply)

    @rule()
    def acquire(self) -> None:
        decision, _ = machine.acquire(self.rec, self.config, self.now)
        reply = self.lua("acquire", "")
        if isinstance(decision, Permit):
            assert int(reply[0]) == 1
            assert int(reply[4]) == decision.token
            assert int(reply[2]) == decision.generation
            self.held.append(decision)
        else:
            assert isinstance(decision, Rejection)
            assert int(reply[0]) == 0
            if decision.retry_after is not None:
                assert int(reply[3]) == us(decision.retry_after)

    @rule(
        index=st.integers(0, 9),
        outcome=st.sampled_from(
            [Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED, Outcome.CANCELLED]
        ),
        duration=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    )
    def finish(self, index: int, outcome: Outcome, duration: float) -> None:
        if not self.held:
            return
        permit = self.held.pop(index % len(self.held))
        transition = machine.record(self.rec, self.config, permit, outcome, self.now, duration)
        expected_trigger = "" if transition is None else transition.trigger.value
        if outcome is Outcome.SUCCESS and not permit.token and not self.config.has_rate_rule:
            # what a breaker sends for a success when the rules keep no window (hot path)
            reply = self.lua("success", permit.generation)
            if reply == 1:
                assert expected_trigger == ""
                return
        else:
            reply = self.lua("record", permit.generation, permit.token, int(outcome), us(duration))
        assert reply[6].decode() == expected_trigger

    @rule(
        successes=st.lists(
            st.sampled_from([Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED]),
            min_size=1,
            max_size=5,
        )
    )
    def batch(self, successes: list[Outcome]) -> None:
        """A batched flush equals the same outcomes recorded one by one."""
        decision, _ = machine.acquire(self.rec, self.config, self.now)
        reply = self.lua("acquire", "")
        if not isinstance(decision, Permit) or decision.token:
            if isinstance(decision, Permit):
                self.held.append(decision)
            return
        assert int(reply[0]) == 1
        for outcome in successes:
            machine.record(self.rec, self.config, decision, outcome, self.now, 0.0)
        codes = "".join(str(int(o)) for o in successes)
        durations = ",".join("0" for _ in successes) if self.config.timed else ""
        self.lua("batch", decision.generation, codes, durations)

    @rule(raw=configs)
    def rebind(self, raw: dict[str, Any]) -> None:
        """Another process binds the name with other rules (the newest bind wins): the
        record carries over, and the window starts afresh when its shape changed."""
        config = build_config(raw)
        if config is None or config.fingerprint == self.config.fingerprint:
            return
        restarted = machine.rebind(self.rec, config)
        self.config = config
        self.bound = False  # the next call carries the new binding: an empty batch here
        reply = self.lua("batch", self.rec.generation, "", "")
        assert reply[9] != b""  # it replaced the stored config
        assert int(reply[10]) == int(restarted)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0, 2.5, 4.0, 5.0, 10.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(action=st.sampled_from([Trigger.RESET, Trigger.FORCE_OPEN, Trigger.DISABLE]))
    def operator(self, action: Trigger) -> None:
        machine.operator(self.rec, action, self.now)
        self.lua("operator", action.value)

    @invariant()
    def same_record(self) -> None:
        if not hasattr(self, "rec"):
            return
        raw = self.client.hgetall(self.keys[0])
        stored = {k.decode(): v.decode() for k, v in raw.items()}
        rec = self.rec
        assert stored[Field.STATE] == rec.state.value
        assert int(stored[Field.GENERATION]) == rec.generation
        assert int(stored[Field.CONSECUTIVE_FAILURES]) == rec.consecutive_failures
        assert int(stored[Field.REOPEN_COUNT]) == rec.reopen_count
        assert int(stored[Field.TRIAL_SUCCESSES]) == rec.trial_successes
        assert int(stored[Field.NEXT_TOKEN]) == rec.next_token
        assert (
            int(stored[Field.SUCCESSES]),
            int(stored[Field.FAILURES]),
            int(stored[Field.IGNORED]),
            int(stored[Field.REJECTED]),
            int(stored[Field.SLOW]),
        ) == (rec.successes, rec.failures, rec.ignored, rec.rejected, rec.slow)
        assert stored[Field.FINGERPRINT] == self.config.fingerprint
        # the read row (breaker_read.lua's source) is these very fields, packed
        assert self.client.get(self.keys[3]) == packed_row(raw)
        if rec.state.value == "open":
            assert int(stored[Field.OPEN_UNTIL]) == us(rec.open_until)
        trials = {
            int(m): int(s) for m, s in self.client.zrange(self.keys[1], 0, -1, withscores=True)
        }
        assert trials == {t: us(d) for t, d in rec.trials.items()}
        if rec.window is not None:
            assert (
                int(stored[Field.WINDOW_CALLS]),
                int(stored[Field.WINDOW_FAILURES]),
                int(stored[Field.WINDOW_SLOW]),
            ) == (
                rec.window.calls,
                rec.window.failures,
                rec.window.slow,
            )
        if isinstance(rec.window, TimeWindow):
            buckets = {
                int(k): [int(x) for x in v.split()]
                for k, v in self.client.hgetall(self.keys[2]).items()
            }
            assert buckets == {b[0]: b[1:] for b in rec.window._buckets}


@pytest.mark.parametrize("gap", [9.0, 9.99, 10.0, 10.5, 11.0])
def test_time_window_expiry_boundary_matches(gap: float) -> None:
    """A bucket exactly one window old is dropped by both (the edge the model can miss)."""
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    config = BreakerConfig(
        failure_threshold=None, failure_rate_threshold=1.0, window_duration=10, minimum_calls=1
    )
    rec = BreakerRecord(config)
    rec.generation = us(1.0)  # a state the script creates starts at its creation time in us
    keys = [object_key("edge", "cb", "e", part) for part in ("state", "trials", "window", "row")]
    for now in (1.0, 1.0 + gap):
        permit, _ = machine.acquire(rec, config, now)
        assert isinstance(permit, Permit)
        machine.record(rec, config, permit, Outcome.SUCCESS, now)
        base = [us(now), config.fingerprint, binding_argument(config, "", "e"), 0]
        client.eval(SCRIPT.source, 4, *keys, "acquire", *base, "")
        client.eval(SCRIPT.source, 4, *keys, "record", *base, permit.generation, 0, 0, 0)
    assert rec.window is not None
    assert int(client.hget(keys[0], Field.WINDOW_CALLS)) == rec.window.calls
    assert rec.window.calls == (2 if gap < 10 else 1)


def test_lua_matches_python_on_fakeredis() -> None:
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    scripts_agree(LuaAgreesWithPython, client, [SCRIPT], examples=300, steps=40)


@pytest.mark.redis_server
def test_lua_matches_python_on_real_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        scripts_agree(LuaAgreesWithPython, client, [SCRIPT], examples=40, steps=40)
    finally:
        client.close()


def test_lua_legal_moves_are_generated_from_the_python_table() -> None:
    """Every move of core/states.TRANSITIONS, and nothing else, is in the script's LEGAL."""
    from aioresil.backends.breaker_schema import lua_prelude
    from aioresil.core.states import TRANSITIONS, CircuitState, Trigger

    prelude = lua_prelude()
    assert prelude in SCRIPT.source
    for state in CircuitState:
        for trigger in Trigger:
            entry = f"['{state.value}>{trigger.value}'] = "
            if (state, trigger) in TRANSITIONS:
                assert entry + f"'{TRANSITIONS[(state, trigger)].value}'" in prelude
            else:
                assert entry not in prelude
    # and the script spells no state move or hash field of its own
    from aioresil.backends.scripts import load_script

    body = load_script("breaker").source  # the file as written
    assert "'closed>trip'" not in body and "'nsl'" not in body and "'cf'" not in body


def test_success_hot_path_and_rebind() -> None:
    """A bound breaker's success in CLOSED is the script's hot path (reply 1); a call without
    a binding on a breaker whose config Redis lost answers -1 and changes nothing."""
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    config = BreakerConfig(failure_threshold=3)
    keys = [object_key("hot", "cb", "h", part) for part in ("state", "trials", "window", "row")]

    def call(op: str, binding: bytes, *extra: Any) -> Any:
        return client.eval(SCRIPT.source, 4, *keys, op, 1, config.fingerprint, binding, 0, *extra)

    assert int(call("acquire", b"", "")[0]) == -1  # nothing stored, no binding
    assert client.exists(keys[0]) == 0
    reply = call("acquire", binding_argument(config, "", "h"), "")
    assert int(reply[0]) == 1 and reply[8].decode() == config.fingerprint
    assert call("success", b"", 1) == 1
    assert int(client.hget(keys[0], Field.SUCCESSES)) == 1
    other = BreakerConfig(failure_threshold=4)
    reply = client.eval(
        SCRIPT.source, 4, *keys, "acquire", 1, other.fingerprint,
        binding_argument(other, "", "h"), 0, "",
    )  # fmt: skip
    # the newest bind wins and says what it replaced
    assert (reply[8].decode(), reply[9].decode()) == (other.fingerprint, config.fingerprint)
    assert call("success", b"", 1) != 1  # not under its own config any more: full path
    assert client.hget(keys[0], Field.FINGERPRINT).decode() == other.fingerprint


@pytest.mark.parametrize("hand_written", [b"-5", b"41", b"1 2"])
def test_the_hot_path_writes_the_counter_into_the_row(hand_written: bytes) -> None:
    """On fakeredis (no ``struct``: the plain-Lua bytes) the hot path's success counter
    lands in the row key, two's complement for a negative one written by hand; a counter that
    is no integer takes the full path, which reads it as 0 and writes it and the row back."""
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    config = BreakerConfig(failure_threshold=3)
    keys = [object_key("hot", "cb", "h", part) for part in ("state", "trials", "window", "row")]

    def call(op: str, binding: bytes, *extra: Any) -> Any:
        return client.eval(SCRIPT.source, 4, *keys, op, 1, config.fingerprint, binding, 0, *extra)

    call("acquire", binding_argument(config, "", "h"), "")
    assert call("success", b"", 1) == 1
    client.hset(keys[0], Field.SUCCESSES, hand_written)
    reply = call("success", b"", 1)
    fields = client.hgetall(keys[0])
    assert client.get(keys[3]) == packed_row(fields)
    if hand_written == b"1 2":
        assert reply != 1 and fields[Field.SUCCESSES.encode()] == b"1"
    else:
        assert reply == 1 and int(fields[Field.SUCCESSES.encode()]) == int(hand_written) + 1
