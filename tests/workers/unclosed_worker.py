"""A program that uses every Redis-backed store and never closes anything (tests/test_exit.py).

``python tests/workers/unclosed_worker.py URL RUNS PREFIX``: ``RUNS`` times, ``asyncio.run`` a
coroutine that builds a ``RedisBackend`` (keys under ``PREFIX``) with a dead letter queue, a
checkpoint store, a fleet-wide bulkhead and rate limiter and a breaker registry (strict and
batched breakers, one forced open), uses each, and returns without closing any of them. Then
it prints ``{"runs": RUNS, "unclosed_warnings": N}`` where ``N`` counts the ``ResourceWarning``
"unclosed RedisBackend" raised as each backend was collected. Exit must never hang.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import warnings

from aioresil import (
    BreakerConfig,
    BreakerRegistry,
    Bulkhead,
    CheckpointStore,
    DeadLetterQueue,
    RateLimiter,
    RedisBackend,
)


async def use_everything(url: str, run: int, prefix: str = "aioresil") -> None:
    backend = RedisBackend.from_url(url, prefix=prefix)
    dlq = DeadLetterQueue(backend, name="exit")
    await dlq.push("task", {"run": run}, "failed", attempts=1)
    store = CheckpointStore(backend, namespace="exit")
    async with store.resume(f"run-{run}", initial={"done": []}) as checkpoint:
        await checkpoint.save({"done": [run]})
    async with Bulkhead(2, name="exit", backend=backend), RateLimiter(1000, backend=backend):
        pass
    # Breakers last: the first one starts the pub/sub listener, and returning a few loop
    # turns later (a different number each run) lets the shutdown's cancellation land in
    # each phase of its start (connect, subscribe, resync, read).
    registry = BreakerRegistry(backend=backend)
    batched = registry.get("batched", config=BreakerConfig(recording="batched"))
    for _ in range(3):
        async with batched:  # outcomes left in the batch buffer: a flush timer is pending
            pass
    await registry.get("tripped").force_open()  # published: every listener applies it
    async with registry.get("strict"):
        pass
    for _ in range(run % 10):
        await asyncio.sleep(0)


def main() -> None:
    url, runs, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    unclosed = 0
    for run in range(runs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(use_everything(url, run, prefix))
            gc.collect()  # the backend sits in reference cycles: collect it now, not at exit
        unclosed += sum(
            issubclass(w.category, ResourceWarning) and "unclosed RedisBackend" in str(w.message)
            for w in caught
        )
    print(json.dumps({"runs": runs, "unclosed_warnings": unclosed}), flush=True)


if __name__ == "__main__":
    main()
