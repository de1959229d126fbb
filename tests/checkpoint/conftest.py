"""Fixtures of the checkpoint tests (``tests/checkpoint/``): one store factory per backend kind.

``ckpt_kind`` runs each test on the memory backend, on fakeredis (with Lua through lupa) and
on a real ``redis-server`` started by ``tests/conftest.py``. Every store of one test shares one
backend, as a fleet of workers would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aioresil import CheckpointStore, MemoryBackend
from aioresil.backends.keys import encode_name
from aioresil.testing import FakeClock

CKPT_KINDS = ["memory", "fakeredis", "redis"]

MakeStore = Callable[..., CheckpointStore]


@pytest.fixture(params=CKPT_KINDS)
def ckpt_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def ckpt_backend(ckpt_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if ckpt_kind == "memory":
        yield MemoryBackend()
        return
    from aioresil.backends.redis import RedisBackend

    if ckpt_kind == "fakeredis":
        import fakeredis

        backend = RedisBackend(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
        try:
            yield backend
        finally:
            await backend.client.aclose()
        return
    async with open_redis(request.getfixturevalue("redis_url")) as real:
        yield real


@asynccontextmanager
async def open_redis(url: str, **options: Any) -> AsyncIterator[Any]:
    """``RedisBackend.from_url`` that also closes its pool.

    ``RedisBackend.aclose`` closes the client it built, but redis-py does not close a pool
    that was passed to ``Redis(connection_pool=...)``, so its sockets would leak (a
    ResourceWarning, an error under ``filterwarnings = error``).
    """
    from aioresil.backends.redis import RedisBackend

    # A generous deadline: these tests race 50 writers on a shared, slow machine and check
    # the outcome, not latency (the deadline itself is tested in tests/test_faults.py).
    options.setdefault("operation_timeout", 10.0)
    backend = RedisBackend.from_url(url, **options)
    try:
        yield backend
    finally:
        await backend.aclose()
        await backend.client.connection_pool.aclose()


@pytest.fixture
def make_store(ckpt_backend: Any, clock: FakeClock) -> MakeStore:
    """``make_store(**options)``: a CheckpointStore on the test's backend and fake clock."""

    def make(**options: Any) -> CheckpointStore:
        options.setdefault("clock", clock)
        return CheckpointStore(ckpt_backend, **options)

    return make


async def corrupt_state(store: CheckpointStore, task_id: str, data: bytes) -> None:
    """Overwrite the stored state bytes of ``task_id`` behind the store's back."""
    task = encode_name(task_id)
    if isinstance(store.backend, MemoryBackend):
        store.backend.namespace("checkpoint")[store.namespace][task].data = data
    else:
        key = store.backend.key("ckpt", store.namespace, "d:" + task)
        await store.backend.client.hset(key, "d", data)


async def clobber_key(store: CheckpointStore, task_id: str) -> None:
    """Replace the task's data hash with a plain string (Redis only)."""
    key = store.backend.key("ckpt", store.namespace, "d:" + encode_name(task_id))
    await store.backend.client.delete(key)
    await store.backend.client.set(key, b"garbage")
