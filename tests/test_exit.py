"""Exit never hangs; an unclosed backend says so (issue 13 item 5).

A program that builds a ``RedisBackend`` (with a registry, a DLQ, a checkpoint store, a
bulkhead and a rate limiter on it) and returns without closing it used to hang at exit about
once in ten: ``asyncio.run`` cancels the pub/sub listener once, redis-py could swallow that
cancellation, and the listener went on reading forever. ``tests/workers/unclosed_worker.py``
is such a program; without the fix it hung within 50 runs in each of 4 tries out of 4.

Why one subprocess looping ``asyncio.run`` 50 times, beside three that run once: the loop puts
50 event-loop shutdowns (each landing in a different phase of the listener's start) in one
interpreter start, and the single runs add real interpreter exits; all four run at once, so
the test takes a few seconds. The warnings those leaks raise are collected inside the
subprocess; in this process, ``filterwarnings = error`` stays in force, so the in-process
warning test records warnings explicitly and closes the pool it leaked itself.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from aioresil import RedisBackend

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "unclosed_worker.py"
DEADLINE = 120  # seconds; a healthy run takes a few, a hang never ends


def test_programs_that_never_close_their_backend_always_exit(redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [50, 1, 1, 1]
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), redis_url, str(count), f"exit{number}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for number, count in enumerate(runs)
    ]
    hangs = 0
    reports = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            hangs += 1
            process.kill()
            process.communicate()
            continue
        assert process.returncode == 0, err.decode()[-2000:]
        # Nothing left pending or raising at shutdown ("Task was destroyed but it is
        # pending!", "Exception ignored in ...": a batch flush started while the loop closed).
        assert err.decode() == ""
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert hangs == 0
    # Every leaked backend said so, once, as it was collected.
    assert reports == [{"runs": n, "unclosed_warnings": n} for n in runs]


async def test_an_unclosed_backend_warns_like_an_unclosed_session(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url)
    await backend.ping()
    client = backend.client
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del backend
        gc.collect()
    await client.aclose(close_connection_pool=True)  # the pool this test leaked on purpose
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == [
        "unclosed RedisBackend(prefix='aioresil'): call `await backend.aclose()` or use "
        "`async with RedisBackend.from_url(...) as backend:` (it also stops the listener and "
        "flushes batched outcomes)"
    ]


async def test_a_closed_backend_and_a_borrowed_client_do_not_warn(redis_url: str) -> None:
    import redis.asyncio as aioredis

    async with RedisBackend.from_url(redis_url) as closed:
        await closed.ping()
    client = aioredis.Redis.from_url(redis_url)
    borrowed = RedisBackend(client, listen=False)  # nothing of ours to close
    await borrowed.ping()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del closed, borrowed
        gc.collect()
    await client.aclose()
    assert [str(w.message) for w in caught if "RedisBackend" in str(w.message)] == []


@pytest.mark.parametrize("closer", ["aclose", "async with"])
async def test_closing_stops_the_listener(redis_url: str, closer: str) -> None:
    from aioresil import CircuitBreaker

    backend = RedisBackend.from_url(redis_url)
    async with CircuitBreaker("listened", backend=backend):
        pass
    listener = backend._listener
    assert listener is not None and not listener.done()
    if closer == "aclose":
        await backend.aclose()
    else:
        async with backend:
            pass
    assert listener.done()
