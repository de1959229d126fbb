"""A fleet member for tests/integration/test_fleet.py: one process, one backend, one shared breaker.

Run as a plain script (no package import needed besides aioresil on ``PYTHONPATH``)::

    python tests/workers/fleet_worker.py '{"url": "redis://...", "name": "b", "config": {...}}'

Optional keys of that JSON: ``"clock": {"start": s, "wall_start": w}`` gives the *breaker* a
:class:`~aioresil.testing.FakeClock` (the backend keeps Redis ``TIME``).

Protocol: the worker prints ``@@ {"event": "ready", ...}`` once, then reads one JSON command
per line on stdin and answers each with one ``@@ <json>`` line on stdout (structlog writes to
stderr, so its lines never mix with answers). Commands (``op``):

* ``warm``: one successful guarded call (learns the view, starts the pub/sub listener).
* ``fail``: ``tasks`` = list of attempt counts, one concurrent task each; every attempt is a
  failing guarded call. Answers ``ran`` (blocks that ran and raised), ``rejected``,
  ``attempts`` and ``max_ran_per_task``.
* ``trials``: until wall time ``until``, guarded calls whose block increments a concurrency
  counter in Redis (``gauge`` key prefix), sleeps ``hold`` s and decrements it.
* ``hold``: retry until a permit is granted, then write ``flag`` = the wall time the granted
  attempt started, answer ``holding`` and sleep forever (the test SIGKILLs us).
* ``probe``: successful guarded calls every ``interval`` s until one succeeds or ``until``.
* ``watch``: read ``breaker.state`` (no I/O) every ``interval`` s until it is ``state``
  (default ``"open"``) or ``until``; answers the wall time it was first seen.
* ``attempt``: one successful guarded call; ``outcome`` "ok" or "rejected".
* ``exit``: close the backend and exit.

Every answer carries ``events``: the ``StateChanged`` events this process's own script
replies produced so far, as ``[old, new, trigger]``, ``failovers`` (should stay 0),
``conflicts`` (``BreakerConfigConflict`` events as ``[ours, in_force, replaced]``) and this
process's config ``fingerprint``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import structlog

from aioresil import (
    BreakerConfig,
    BreakerConfigConflict,
    CircuitBreaker,
    CircuitOpenError,
    StateChanged,
)
from aioresil.backends.redis import RedisBackend
from aioresil.events import BackendFailover
from aioresil.testing import FakeClock

# Atomically: gauge += 1, peak = max(peak, gauge). KEYS[1] gauge, KEYS[2] peak.
ENTER = """
local c = redis.call('INCR', KEYS[1])
local p = tonumber(redis.call('GET', KEYS[2]) or '0')
if c > p then redis.call('SET', KEYS[2], c) end
return c
"""


class Boom(Exception):
    """The failure of a guarded call."""


def answer(payload: dict[str, Any]) -> None:
    sys.stdout.write("@@ " + json.dumps(payload) + "\n")
    sys.stdout.flush()


class Member:
    def __init__(self, spec: dict[str, Any]) -> None:
        clock = None
        if spec.get("clock"):
            clock = FakeClock(start=spec["clock"]["start"], wall_start=spec["clock"]["wall_start"])
        # A generous deadline: eight workers on a shared 2-core machine can be slow to answer,
        # and these tests count outcomes, not latency (faults are tested in test_faults.py).
        self.backend = RedisBackend.from_url(
            spec["url"], max_connections=spec.get("pool", 64), operation_timeout=10.0
        )
        self.breaker = CircuitBreaker(
            spec["name"], config=BreakerConfig(**spec["config"]), backend=self.backend, clock=clock
        )
        self.events: list[list[str]] = []
        self.conflicts: list[list[str]] = []
        self.failovers = 0
        self.breaker.add_listener(self.on_event)

    def on_event(self, event: object) -> None:
        if isinstance(event, StateChanged):
            trigger = event.trigger.value if event.trigger is not None else ""
            self.events.append([event.old.value, event.new.value, trigger])
        elif isinstance(event, BackendFailover):
            self.failovers += 1
        elif isinstance(event, BreakerConfigConflict):
            self.conflicts.append([event.ours, event.in_force, event.replaced])

    def reply(self, **fields: Any) -> None:
        answer(
            {
                **fields,
                "events": self.events,
                "failovers": self.failovers,
                "conflicts": self.conflicts,
                "fingerprint": self.breaker.config.fingerprint,
            }
        )

    async def ok(self) -> str:
        try:
            async with self.breaker:
                pass
        except CircuitOpenError as error:
            return f"rejected:{error.state.value}"
        return "ok"

    async def fail(self, tasks: list[int]) -> None:
        counts = {"ran": 0, "rejected": 0, "attempts": 0, "max_ran_per_task": 0}

        async def one_task(attempts: int) -> None:
            ran = 0
            for _ in range(attempts):
                counts["attempts"] += 1
                try:
                    async with self.breaker:
                        counts["ran"] += 1
                        ran += 1
                        counts["max_ran_per_task"] = max(counts["max_ran_per_task"], ran)
                        raise Boom
                except CircuitOpenError:
                    counts["rejected"] += 1
                except Boom:
                    pass

        await asyncio.gather(*(one_task(n) for n in tasks))
        self.reply(**counts)

    async def trials(self, until: float, hold: float, gauge: str) -> None:
        client = self.backend.client
        enter = client.register_script(ENTER)
        ran = rejected = 0
        while time.time() < until:
            try:
                async with self.breaker:
                    await enter(keys=[gauge + ":now", gauge + ":peak"])
                    try:
                        await asyncio.sleep(hold)
                    finally:
                        await client.decr(gauge + ":now")
                    ran += 1
            except CircuitOpenError:
                rejected += 1
                await asyncio.sleep(0.002)
        self.reply(trials=ran, rejected=rejected)

    async def hold(self, flag: str) -> None:
        while True:
            started = time.time()
            try:
                async with self.breaker:
                    await self.backend.client.set(flag, repr(started))
                    self.reply(holding=True, started=started)
                    await asyncio.sleep(3600)
            except CircuitOpenError:
                await asyncio.sleep(0.005)

    async def probe(self, until: float, interval: float) -> None:
        attempts: list[list[Any]] = []
        while time.time() < until:
            before = time.time()
            outcome = await self.ok()
            attempts.append([before, time.time(), outcome])
            if outcome == "ok":
                break
            await asyncio.sleep(interval)
        self.reply(attempts=attempts)

    async def watch(self, until: float, interval: float, state: str, started: str | None) -> None:
        if started is not None:  # a server-side counter: the test waits until all are watching
            await self.backend.client.incr(started)
        polls = 0
        seen = None
        while time.time() < until:
            polls += 1
            if self.breaker.state.value == state:
                seen = time.time()
                break
            await asyncio.sleep(interval)
        self.reply(seen=seen, polls=polls)

    async def serve(self) -> None:
        answer({"event": "ready", "pid": os.getpid()})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "warm":
                self.reply(outcome=await self.ok(), state=self.breaker.state.value)
            elif op == "fail":
                await self.fail(cmd["tasks"])
            elif op == "trials":
                await self.trials(cmd["until"], cmd["hold"], cmd["gauge"])
            elif op == "hold":
                await self.hold(cmd["flag"])
            elif op == "probe":
                await self.probe(cmd["until"], cmd["interval"])
            elif op == "watch":
                await self.watch(
                    cmd["until"], cmd["interval"], cmd.get("state", "open"), cmd.get("started")
                )
            elif op == "attempt":
                before = time.time()
                outcome = await self.ok()
                self.reply(outcome=outcome, before=before, state=self.breaker.state.value)
            elif op == "exit":
                break
            else:
                self.reply(error=f"unknown op {op!r}")
        await self.backend.aclose()
        await self.backend.client.connection_pool.aclose()
        self.reply(exited=True)


def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    spec = json.loads(sys.argv[1])
    asyncio.run(Member(spec).serve())


if __name__ == "__main__":
    main()
