"""A worker process for the fleet-wide bulkhead and rate limiter tests.

``python tests/workers/policy_worker.py bulkhead URL WORKERS TASKS HOLD`` or
``python tests/workers/policy_worker.py ratelimit URL WORKERS SECONDS``: waits until all ``WORKERS``
processes are ready (a Redis counter used as a barrier), runs, and prints its statistics as
JSON. Run with the repository root on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aioresil import Bulkhead, RateLimiter, RateLimitExceededError
from aioresil.backends.redis import RedisBackend


async def barrier(backend: RedisBackend, workers: int) -> None:
    await backend.client.incr("test:ready")
    while True:  # the other processes are not tasks we could wait on: poll
        if int(await backend.client.get("test:ready") or 0) >= workers:
            return
        await asyncio.sleep(0.005)


async def bulkhead(url: str, workers: int, tasks: int, hold: float) -> dict[str, object]:
    async with RedisBackend.from_url(url) as backend:
        client = backend.client
        limit = Bulkhead(
            3, name="fleet", backend=backend, max_waiting=tasks, poll_interval=0.005, lease=30
        )

        async def job() -> None:
            # Every holder counts itself in; the highest count seen is the fleet's peak.
            running = await client.incr("test:active")
            await client.rpush("test:observed", running)
            await asyncio.sleep(hold)
            await client.decr("test:active")

        await barrier(backend, workers)
        await asyncio.gather(*(limit.call(job) for _ in range(tasks)))
        return limit.stats().to_dict()


async def ratelimit(url: str, workers: int, seconds: float) -> dict[str, object]:
    async with RedisBackend.from_url(url) as backend:
        limiter = RateLimiter(20, per=1.0, burst=5, name="fleet", backend=backend)
        await barrier(backend, workers)
        granted = refused = 0
        first = await backend.client.time()
        loop = asyncio.get_running_loop()
        stop = loop.time() + seconds
        while loop.time() < stop:
            try:
                await limiter.acquire()
                granted += 1
            except RateLimitExceededError as error:
                refused += 1
                await asyncio.sleep(min(error.retry_after, 0.01))
        last = await backend.client.time()
        return {
            "granted": granted,
            "refused": refused,
            "start_us": first[0] * 1_000_000 + first[1],
            "end_us": last[0] * 1_000_000 + last[1],
        }


def main(argv: list[str]) -> None:
    mode, url, workers = argv[0], argv[1], int(argv[2])
    if mode == "bulkhead":
        result = asyncio.run(bulkhead(url, workers, int(argv[3]), float(argv[4])))
    else:
        result = asyncio.run(ratelimit(url, workers, float(argv[3])))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
