"""Checkpoint store throughput on a real Redis, against raw SET/GET of the same bytes.

What is measured, per state size (1 KB and 100 KB of JSON) and concurrency (1 and 100 tasks,
each task on its own checkpoint):

* **save**: ``await store.save(task, state, expected_version=v)`` (a fenced save: serialize,
  size check, one EVALSHA that checks the version and writes data, version, timestamp and
  index entry; the store's defaults, so no history copy), against the floor
  ``SET key <the same serialized bytes>``;
* **load**: ``await store.load(task)`` (one EVALSHA + JSON decode) against ``GET key``;
* **(JSON encode alone)**: the default serializer on the same state, against the same ``SET``:
  the part of a save the floor does not do, measured in the same run;
* **save, state already bytes**: a fenced save through a serializer that passes bytes through,
  so the state is exactly the floor's bytes: the store's own cost;
* **save, OrjsonSerializer**: the first row's save with ``serializer=OrjsonSerializer()`` (the
  ``aioresil[orjson]`` extra: the default's strict JSON, encoded by orjson where that is exact).

Saves of states over 16 KB stage the bytes with a pipelined ``SET`` and the script ``RENAME``s
them into place (Redis copies every ``ARGV`` string into Lua, ~1.2 us per KB); smaller ones
travel inline in one ``EVALSHA``. Both are packed by ``aioresil/backends/wire.py``.

Both sides go through the same ``RedisBackend`` connection pool on a ``redis-server`` this
module starts on a free loopback port; rounds alternate floor and subject and the best round
of each counts, so the ratio is stable where the absolute numbers are not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aioresil import CheckpointStore, OrjsonSerializer
from aioresil.backends.redis import RedisBackend
from aioresil.stores.serialize import JSON

from ._harness import markdown_table

Call = Callable[[int], Awaitable[object]]


async def _ops_per_second(call: Call, tasks: int, calls_per_task: int) -> float:
    async def worker(task: int) -> None:
        for _ in range(calls_per_task):
            await call(task)

    started = time.perf_counter()
    await asyncio.gather(*(worker(task) for task in range(tasks)))
    return tasks * calls_per_task / (time.perf_counter() - started)


async def _best_pair(
    subject: Call, floor: Call, tasks: int, calls_per_task: int, repeats: int
) -> tuple[float, float]:
    best_subject = best_floor = 0.0
    for _ in range(repeats):
        best_floor = max(best_floor, await _ops_per_second(floor, tasks, calls_per_task))
        best_subject = max(best_subject, await _ops_per_second(subject, tasks, calls_per_task))
    return best_subject, best_floor


class _PassBytes:
    """A serializer for states that are already bytes: isolates the store's own cost."""

    def dumps(self, obj: object) -> bytes:
        assert isinstance(obj, bytes)
        return obj

    def loads(self, data: bytes) -> object:
        return data


def _state(size: int) -> dict[str, object]:
    # A realistic shape: a cursor, counters and a payload; serialized size ~= ``size``.
    base: dict[str, object] = {"cursor": 123_456, "done": 789, "errors": [], "blob": ""}
    overhead = len(JSON.dumps(base))
    base["blob"] = "x" * max(size - overhead, 0)
    return base


async def main(smoke: bool) -> str:
    from tests.servers import RedisServer, free_port

    server = RedisServer(free_port()).start()
    try:
        backend = RedisBackend.from_url(server.url, max_connections=128)
        try:
            rows = await _measure(backend, smoke)
        finally:
            await backend.aclose()
            await backend.client.connection_pool.aclose()
    finally:
        server.cleanup()
    table = markdown_table(
        ["operation", "state", "tasks", "aioresil ops/s", "raw SET/GET ops/s", "ratio (time)"],
        rows,
    )
    return (
        "## Checkpoint store (`benchmarks/bench_checkpoint.py`)\n\n"
        "Fenced `save` (one EVALSHA: version check + data + version + timestamp + index; "
        "store defaults, so no history copy and no TTL) and `load` (one EVALSHA + JSON "
        "decode) against raw `SET`/`GET` of the same serialized bytes, same pool, same "
        "redis-server (loopback), best of interleaved rounds. "
        '"save, OrjsonSerializer": the same save with `serializer=OrjsonSerializer()`. '
        "Ratio = time per aioresil call / time per raw call.\n\n" + table
    )


async def _measure(backend: RedisBackend, smoke: bool) -> list[list[str]]:
    store = CheckpointStore(backend, namespace="bench")  # the defaults: no history, no TTL
    rows: list[list[str]] = []
    for size, label in [(1_000, "1 KB"), (100_000, "100 KB")]:
        for tasks in (1, 100):
            if smoke:
                calls, repeats = 5, 1
            else:
                total = 4000 if size <= 1_000 else 800
                calls, repeats = max(total // tasks, 5), 3
            for name, ours, raw in await _case(store, backend, size, tasks, calls, repeats):
                rows.append(
                    [name, label, str(tasks), f"{ours:,.0f}", f"{raw:,.0f}", f"{raw / ours:.2f}x"]
                )
    return rows


async def _case(
    store: CheckpointStore, backend: RedisBackend, size: int, tasks: int, calls: int, repeats: int
) -> list[tuple[str, float, float]]:
    client = backend.client
    state = _state(size)
    payload = JSON.dumps(state)
    ids = [f"task-{size}-{tasks}-{i}" for i in range(tasks)]
    raw_keys = [f"raw:{size}:{tasks}:{i}" for i in range(tasks)]

    def fenced(target: CheckpointStore, value: object) -> Callable[[int], Awaitable[object]]:
        """Each task's save of ``value`` to ``target``, fenced by that task's last version."""
        versions = [0] * tasks

        async def save(task: int) -> object:
            versions[task] = await target.save(ids[task], value, expected_version=versions[task])
            return versions[task]

        return save

    save = fenced(store, state)

    async def raw_set(task: int) -> object:
        return await client.set(raw_keys[task], payload)

    async def load(task: int) -> object:
        return await store.load(ids[task])

    async def raw_get(task: int) -> object:
        return await client.get(raw_keys[task])

    async def encode(task: int) -> object:
        return JSON.dumps(state)  # what save() does before any I/O (the floor skips it)

    raw_store = CheckpointStore(
        store.backend, namespace=store.namespace + "-bytes", serializer=_PassBytes()
    )
    # The store's own cost: the same bytes as the floor, no encoding on our side.
    save_bytes = fenced(raw_store, payload)
    fast_store = CheckpointStore(
        store.backend, namespace=store.namespace + "-orjson", serializer=OrjsonSerializer()
    )
    save_orjson = fenced(fast_store, state)

    out: list[tuple[str, float, float]] = []
    for name, subject, floor in [
        ("save", save, raw_set),
        ("(JSON encode alone)", encode, raw_set),
        ("save, state already bytes", save_bytes, raw_set),
        ("save, OrjsonSerializer", save_orjson, raw_set),
        ("load", load, raw_get),
    ]:
        ours, raw = await _best_pair(subject, floor, tasks, calls, repeats)
        out.append((name, ours, raw))
    return out
