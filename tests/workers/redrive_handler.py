"""The redrive handler of tests/stores/test_dlq_redrive.py, imported by ``aioresil dlq worker``.

Every run is logged in Redis (``test:log``: ``start|end <id> <pid> <redis time µs>``), so the
test can check that no entry ever ran in two processes at once. Payload ``kind``:

* ``"ok"``: succeeds;
* ``"bad"``: always fails (so it is parked after the policy's attempts);
* ``"slow"``: its first run announces itself (``test:slow``) and hangs until the test
  kills the process with SIGKILL; later runs succeed.

The Redis URL comes from ``AIORESIL_TEST_REDIS``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as aioredis

_clients: dict[int, Any] = {}


def _client() -> Any:
    loop = id(asyncio.get_running_loop())
    if loop not in _clients:
        _clients[loop] = aioredis.Redis.from_url(os.environ["AIORESIL_TEST_REDIS"])
    return _clients[loop]


async def _log(event: str, entry_id: str) -> None:
    client = _client()
    seconds, micros = await client.time()
    await client.rpush("test:log", f"{event} {entry_id} {os.getpid()} {seconds * 10**6 + micros}")


async def handle(letter: Any) -> None:
    client = _client()
    await _log("start", letter.id)
    kind = letter.payload["kind"]
    if kind == "slow" and await client.set(f"test:slowed:{letter.id}", 1, nx=True):
        await client.rpush("test:slow", os.getpid())
        await asyncio.sleep(3600)  # a handler that hangs: the test kills or cancels it here
    if kind == "bad":
        await _log("end", letter.id)
        raise ValueError("still failing")
    await _log("end", letter.id)


async def noop(letter: Any) -> None:
    """The benchmark's handler: redriving costs only the queue's own work."""
