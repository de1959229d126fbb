"""A pusher that spools dead letters while Redis is down, then waits to be SIGKILLed.

``python tests/workers/spool_kill_worker.py URL SPOOL_PATH N``: builds a ``RedisBackend`` on
``URL`` (a Redis that does not answer) and a ``DeadLetterQueue`` with ``spool_path=SPOOL_PATH``,
pushes ``N`` entries (payload ``{"n": i}``), printing each returned id on its own line, then
prints ``ready`` and waits forever. The test (tests/stores/test_dlq_faults.py) kills it by PID
with SIGKILL: no ``aclose()``, no ``finally``, no flush runs, so whatever a new process finds
in the spool file is what the pushes themselves put there.
"""

from __future__ import annotations

import asyncio
import sys

import structlog

from aioresil import DeadLetterQueue, RedisBackend


async def main(url: str, path: str, count: int) -> None:
    # The queue's warnings ("dlq_spooled") go to stderr: stdout carries only ids and "ready".
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    backend = RedisBackend.from_url(
        url, operation_timeout=0.5, socket_timeout=0.5, socket_connect_timeout=0.3, listen=False
    )
    async with backend:
        dlq = DeadLetterQueue(backend, name="jobs", spool_path=path)
        for n in range(count):
            print(await dlq.push("charge", {"n": n}, ConnectionError("redis down")), flush=True)
        if dlq.spooled != count:  # the test relies on every push having been spooled
            print(f"error: {dlq.spooled} of {count} pushes spooled", flush=True)
            return
        print("ready", flush=True)
        await asyncio.Event().wait()  # killed here, spool still held, background flush retrying


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
