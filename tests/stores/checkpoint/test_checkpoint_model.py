"""The Lua scripts and the memory driver agree, operation by operation (hypothesis).

Each example runs one random sequence of saves, fenced saves, deletes, loads and listings on a
memory store and on a fakeredis store (the real Lua scripts through lupa) and compares every
answer: versions returned, conflicts and the version they carry, states loaded, pages listed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
from hypothesis import given, settings
from hypothesis import strategies as st

from aioresil import CheckpointConflictError, CheckpointStore, MemoryBackend
from aioresil.backends.redis import RedisBackend
from aioresil.testing import FakeClock

TASKS = st.sampled_from(["a", "a:b", "é"])
# Mostly unconditional saves, so versions climb past keep_history and fenced saves can win.
EXPECTED = st.one_of(st.none(), st.none(), st.integers(min_value=0, max_value=4))
SAVE = st.tuples(st.just("save"), TASKS, EXPECTED, st.integers(0, 9))
OPERATIONS = st.lists(
    st.one_of(
        SAVE,
        SAVE,
        st.tuples(st.just("delete"), TASKS, EXPECTED),
        st.tuples(st.just("load"), TASKS),
        st.tuples(st.just("history"), TASKS),
        st.tuples(st.just("list"), st.sampled_from([None, "a"]), st.integers(1, 3)),
    ),
    min_size=10,
    max_size=40,
)


async def _apply(store: CheckpointStore, operation: tuple[Any, ...]) -> object:
    kind = operation[0]
    try:
        if kind == "save":
            return await store.save(operation[1], operation[3], expected_version=operation[2])
        if kind == "delete":
            return await store.delete(operation[1], expected_version=operation[2])
        if kind == "load":
            loaded = await store.load(operation[1])
            return None if loaded is None else (loaded.state, loaded.version)
        if kind == "history":
            return [(c.state, c.version) for c in await store.history(operation[1])]
        listed = [s.task_id async for s in store.iter(prefix=operation[1], page_size=operation[2])]
        page = await store.list(prefix=operation[1], limit=operation[2])
        return listed, [(e.task_id, e.version) for e in page.entries]
    except CheckpointConflictError as error:
        return ("conflict", error.expected_version, error.current_version)


async def _run_both(operations: list[tuple[Any, ...]]) -> None:
    memory = CheckpointStore(MemoryBackend(), keep_history=2, clock=FakeClock())
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    redis = CheckpointStore(RedisBackend(client), keep_history=2)
    try:
        for step, operation in enumerate(operations):
            expected = await _apply(memory, operation)
            actual = await _apply(redis, operation)
            assert actual == expected, f"step {step}: {operation}"
        for task in ["a", "a:b", "é"]:  # and the final state of every task
            for final in [("load", task), ("history", task), ("list", None, 2)]:
                assert await _apply(redis, final) == await _apply(memory, final), final
    finally:
        await client.aclose()


@settings(max_examples=100, deadline=None)
@given(OPERATIONS)
def test_memory_and_lua_give_the_same_answers(operations: list[tuple[Any, ...]]) -> None:
    asyncio.run(_run_both(operations))
