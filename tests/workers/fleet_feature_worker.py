"""A worker process for the fleet feature tests and benchmarks (quorum, retry budget, sketch).

``python tests/workers/fleet_feature_worker.py '<json spec>'``: runs one job and prints its
result as one JSON line. Run with the repository root on ``sys.path``. Jobs (``spec["job"]``):

* ``quorum``: a :class:`QuorumBreaker` (``name``, ``quorum``, ``instance``) makes ``calls``
  guarded calls that all fail (``sick``) or all succeed; answers what it saw.
* ``budget``: waits on a barrier of ``workers`` processes, then makes ``calls`` calls through
  ``Retry(attempts, budget=FleetRetryBudget(...) if budget else None)`` to an upstream that is
  fully down and counts every call that reaches it (``INCR`` of ``upstream``).
* ``sketch``: a new process's first adaptive deadline: one ``load()`` of the shared sketch.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from aioresil import (
    AdaptiveTimeout,
    BreakerConfig,
    CircuitOpenError,
    FleetRetryBudget,
    QuorumBreaker,
    QuorumConfig,
    Retry,
    StateChanged,
    constant,
)
from aioresil.backends.redis import RedisBackend
from aioresil.policies.adaptive import LatencySketch


class Down(Exception):
    """The upstream's failure."""


async def barrier(backend: RedisBackend, key: str, workers: int) -> None:
    await backend.client.incr(key)
    # A barrier across processes on a server-side counter (no event to await across them;
    # this script runs without the tests package, so without tests.helpers.until).
    while int(await backend.client.get(key) or 0) < workers:  # noqa: ASYNC110 - processes
        await asyncio.sleep(0.005)


async def quorum(spec: dict[str, Any]) -> dict[str, Any]:
    async with RedisBackend.from_url(spec["url"]) as backend:
        breaker = QuorumBreaker(
            spec["name"],
            config=BreakerConfig(failure_threshold=3, recovery_timeout=60),
            quorum=QuorumConfig(quorum=spec["quorum"], instance=spec["instance"], report_ttl=60),
            backend=backend,
        )
        fleet_events: list[str] = []
        breaker.fleet.add_listener(
            lambda e: fleet_events.append(e.new.value) if isinstance(e, StateChanged) else None
        )
        ran = local_rejected = fleet_rejected = 0
        for _ in range(spec["calls"]):
            try:
                async with breaker:
                    ran += 1
                    if spec["sick"]:
                        raise Down()
            except Down:
                pass
            except CircuitOpenError as error:
                if error.name == breaker.name:
                    fleet_rejected += 1
                else:
                    local_rejected += 1
        return {
            "ran": ran,
            "local_rejected": local_rejected,
            "fleet_rejected": fleet_rejected,
            "local": breaker.local.state.value,
            "fleet_events": fleet_events,
        }


async def budget(spec: dict[str, Any]) -> dict[str, Any]:
    async with RedisBackend.from_url(spec["url"]) as backend:
        shared = None
        if spec["budget"]:
            shared = FleetRetryBudget(
                spec["name"],
                backend=backend,
                ratio=spec["ratio"],
                window=spec["window"],
                min_retries=spec["min_retries"],
            )
        retry = Retry(spec["attempts"], on=Down, backoff=constant(0.0), budget=shared)

        async def upstream() -> None:
            await backend.client.incr(spec["upstream"])
            raise Down()

        await barrier(backend, spec["barrier"], spec["workers"])
        for _ in range(spec["calls"]):
            try:
                await retry.call(upstream)
            except Down:
                pass
        stats = retry.stats()
        return {"retries": stats.retries, "budget_exhausted": stats.budget_exhausted}


async def sketch(spec: dict[str, Any]) -> dict[str, Any]:
    async with RedisBackend.from_url(spec["url"]) as backend:
        settings = AdaptiveTimeout(backend=backend, name=spec["name"], min_samples=20)
        learner = LatencySketch(settings, spec["name"], spec["default"])
        before = learner.deadline()
        await learner.load()
        return {"before": before, "after": learner.deadline(), "samples": learner.samples}


JOBS = {"quorum": quorum, "budget": budget, "sketch": sketch}

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    result = asyncio.run(JOBS[spec["job"]](spec))
    sys.stdout.write(json.dumps(result) + "\n")
