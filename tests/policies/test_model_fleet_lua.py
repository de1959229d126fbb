"""Model-based tests: each fleet script and its Python model agree step for step.

``quorum.lua`` / :class:`QuorumModel`, ``retry_budget.lua`` / :class:`BudgetModel` and
``latency_sketch.lua`` / :class:`SketchModel` are driven with the same random operations and
times; every reply must be equal. The models are what the memory backend runs, so memory and
Redis fleets decide alike. Runs on fakeredis (many examples) and a real redis-server (fewer).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from aioresil.backends.scripts import load_script
from aioresil.fleet.budget import BudgetModel
from aioresil.fleet.quorum import QuorumModel
from aioresil.policies.adaptive import BUCKETS, SketchModel

from ..helpers import scripts_agree

QUORUM = load_script("quorum")
BUDGET = load_script("retry_budget")
SKETCH = load_script("latency_sketch")
SCRIPTS = (QUORUM, BUDGET, SKETCH)


class FleetScriptsAgree(RuleBasedStateMachine):
    client: Any = None

    @initialize(
        quorum=st.integers(1, 4),
        ttl=st.sampled_from([50, 300, 1000]),
        width=st.sampled_from([10.0, 100.0, 250.0]),
        buckets=st.integers(1, 10),
        ratio=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        floor=st.integers(0, 3),
        epochs=st.integers(1, 6),
        limit=st.sampled_from([None, 0, 20, 300]),
    )
    def setup(
        self,
        quorum: int,
        ttl: int,
        width: float,
        buckets: int,
        ratio: float,
        floor: int,
        epochs: int,
        limit: int | None,
    ) -> None:
        self.now = 1_000_000.0
        self.quorum, self.ttl, self.limit = quorum, ttl, limit
        self.width, self.buckets, self.ratio, self.floor = width, buckets, ratio, floor
        self.epochs = epochs
        self.q, self.b, self.s = QuorumModel(), BudgetModel(), SketchModel()
        self.qkeys = ["m:{cb:x}:quorum", "m:{cb:x}:quorum-log"]
        self.bkey, self.skey = "m:{rb:x}:w", "m:{lat:x}:sketch"
        self.client.delete(*self.qkeys, self.bkey, self.skey)

    @rule(op=st.sampled_from(["report", "clear", "read"]), instance=st.sampled_from("abcde"))
    def quorum_step(self, op: str, instance: str) -> None:
        self._quorum(op, instance)

    @rule(
        op=st.sampled_from(["confirm", "release"]),
        own=st.booleans(),
        instance=st.sampled_from("abcde"),
    )
    def quorum_settle(self, op: str, own: bool, instance: str) -> None:
        """The tripping instance confirms or releases its trip (or another one tries)."""
        if own and self.q.pending is not None:
            instance = self.q.pending
        self._quorum(op, instance)

    @rule(
        order=st.permutations("abcde"),
        op=st.sampled_from(["confirm", "release", ""]),
        later=st.sampled_from([0.0, 9.5, 49.0]),
    )
    def quorum_round(self, order: list[str], op: str, later: float) -> None:
        """K instances report (a trip unless one is held); the tripping one settles it."""
        for instance in order[: self.quorum]:
            self._quorum("report", instance)
        self.now += later
        if op and self.q.pending is not None:
            self._quorum(op, self.q.pending)

    def _quorum(self, op: str, instance: str) -> None:
        limit = None if self.limit is None else float(self.limit)
        expected = self.q.step(op, self.now, instance, float(self.ttl), self.quorum, limit)
        args: list[Any] = [op, repr(self.now), instance, self.ttl, self.quorum]
        if self.limit is not None:  # else the script's default: the TTL
            args.append(self.limit)
        raw = self.client.evalsha(QUORUM.sha, 2, *self.qkeys, *args)
        live = [(raw[i].decode(), float(raw[i + 1])) for i in range(4, len(raw) - 1, 2)]
        got = (int(raw[0]), int(raw[1]), float(raw[2]), raw[3].decode(), live)
        assert got == expected

    @rule(deposit=st.integers(0, 5), withdraw=st.booleans())
    def budget_step(self, deposit: int, withdraw: bool) -> None:
        expected = self.b.step(
            self.now, self.width, self.buckets, self.ratio, self.floor, deposit, withdraw
        )
        raw = self.client.evalsha(
            BUDGET.sha,
            1,
            self.bkey,
            repr(self.now),
            repr(self.width),
            self.buckets,
            repr(self.ratio),
            self.floor,
            deposit,
            "1" if withdraw else "0",
        )
        assert tuple(int(x) for x in raw) == expected

    @rule(deltas=st.dictionaries(st.integers(0, BUCKETS - 1), st.integers(1, 9), max_size=4))
    def sketch_step(self, deltas: dict[int, int]) -> None:
        expected = self.s.step(self.now, self.width, self.epochs, deltas)
        encoded = ",".join(f"{b}:{c}" for b, c in sorted(deltas.items()))
        raw = self.client.evalsha(
            SKETCH.sha, 1, self.skey, repr(self.now), repr(self.width), self.epochs, encoded
        )
        assert {int(raw[i]): int(raw[i + 1]) for i in range(0, len(raw), 2)} == expected

    @rule(ms=st.sampled_from([1.0, 9.5, 10.0, 49.0, 100.0, 250.0, 999.0]))
    def advance(self, ms: float) -> None:
        self.now += ms


def test_fleet_scripts_match_their_models_on_fakeredis() -> None:
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    scripts_agree(FleetScriptsAgree, client, SCRIPTS, examples=30, steps=30)


@pytest.mark.redis_server
def test_fleet_scripts_match_their_models_on_real_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        scripts_agree(FleetScriptsAgree, client, SCRIPTS, examples=100, steps=40)
    finally:
        client.close()
