"""store.resume(): fenced saves, throttled saves, step memoization, crash and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from aioresil import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointRun,
    CheckpointStore,
    CheckpointTooLargeError,
    SerializationError,
)
from aioresil.testing import FakeClock

from .conftest import MakeStore, corrupt_state

REPO = Path(__file__).resolve().parents[2]


class Boom(Exception):
    """A step that fails."""


# ----------------------------------------------------------------------------- resume + fencing


async def test_resume_starts_from_initial_when_there_is_no_checkpoint(
    make_store: MakeStore,
) -> None:
    store = make_store()
    async with store.resume("job", initial={"next": 0}) as cp:
        assert isinstance(cp, CheckpointRun)
        assert (cp.state, cp.version, cp.resumed) == ({"next": 0}, 0, False)
        assert await cp.save({"next": 5}) == 1
        assert await cp.save({"next": 9}) == 2
    async with store.resume("job", initial={"next": 0}) as again:
        assert (again.state, again.version, again.resumed) == ({"next": 9}, 2, True)


async def test_initial_is_validated_when_resume_is_called(make_store: MakeStore) -> None:
    store = make_store(max_bytes=100)
    with pytest.raises(SerializationError):
        store.resume("job", initial={"x": object()})
    with pytest.raises(CheckpointTooLargeError):
        store.resume("job", initial="x" * 500)


async def test_a_second_worker_on_the_same_task_gets_a_conflict(make_store: MakeStore) -> None:
    store_a, store_b = make_store(), make_store()
    await store_a.save("job", {"n": 0})
    async with store_a.resume("job") as first, store_b.resume("job") as second:
        assert first.version == second.version == 1
        await first.save({"n": 1, "by": "a"})
        with pytest.raises(CheckpointConflictError) as info:
            await second.save({"n": 1, "by": "b"})
        assert (info.value.expected_version, info.value.current_version) == (1, 2)
        with pytest.raises(CheckpointConflictError):  # it stays stale
            await second.save({"n": 2, "by": "b"})
    loaded = await store_a.load("job")
    assert loaded is not None and loaded.state == {"n": 1, "by": "a"}


async def test_two_workers_starting_a_new_task_cannot_both_create_it(
    make_store: MakeStore,
) -> None:
    store = make_store()
    async with store.resume("new", initial=0) as first, store.resume("new", initial=0) as second:
        await first.save(1)
        with pytest.raises(CheckpointConflictError) as info:
            await second.save(1)
        assert info.value.expected_version == 0


async def test_resume_of_a_corrupt_checkpoint_names_the_task(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("job", 1)
    await corrupt_state(store, "job", b"\xff\xfe")
    with pytest.raises(CheckpointCorruptError, match="'job'"):
        async with store.resume("job"):
            pytest.fail("the block must not run")


async def test_a_run_is_usable_only_inside_its_block_and_only_once(make_store: MakeStore) -> None:
    run = make_store().resume("job", initial=0)
    with pytest.raises(RuntimeError, match="not open"):
        await run.save(1)
    async with run:
        await run.save(1)
    with pytest.raises(RuntimeError, match="not open"):
        await run.maybe_save(2)
    with pytest.raises(RuntimeError, match="only once"):
        async with run:
            pytest.fail("the block must not run")


# ----------------------------------------------------------------------------- throttling


async def test_maybe_save_without_a_throttle_writes_every_time(make_store: MakeStore) -> None:
    store = make_store()
    async with store.resume("job", initial=0) as cp:
        assert [await cp.maybe_save(i) for i in range(1, 4)] == [True, True, True]
        assert cp.version == 3


async def test_every_n_writes_on_every_nth_call_and_exit_flushes_the_rest(
    make_store: MakeStore,
) -> None:
    store = make_store()
    async with store.resume("job", initial=0).every(n=3) as cp:
        written = [await cp.maybe_save(i) for i in range(1, 8)]
        assert written == [False, False, True, False, False, True, False]
        assert cp.version == 2 and cp.pending
        stored = await store.load("job")
        assert stored is not None and stored.state == 6
    assert not cp.pending
    stored = await store.load("job")
    assert stored is not None and (stored.state, stored.version) == (7, 3)


async def test_every_seconds_writes_when_the_interval_has_passed(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    async with store.resume("job", initial=0).every(n=1000, seconds=5) as cp:
        assert await cp.maybe_save(1) is False
        clock.advance(4.9)
        assert await cp.maybe_save(2) is False
        clock.advance(0.1)
        assert await cp.maybe_save(3) is True
        assert await cp.maybe_save(4) is False  # the interval restarts at each write
        clock.advance(5)
        assert await cp.maybe_save(5) is True
    stored = await store.load("job")
    assert stored is not None and (stored.state, stored.version) == (5, 2)


async def test_an_error_exit_does_not_write_the_pending_state(make_store: MakeStore) -> None:
    store = make_store()

    async def interrupted() -> None:
        async with store.resume("job", initial=0).every(n=10) as cp:
            await cp.save(1)
            await cp.maybe_save(2)
            raise Boom

    with pytest.raises(Boom):
        await interrupted()
    stored = await store.load("job")
    assert stored is not None and (stored.state, stored.version) == (1, 1)


async def test_flush_writes_only_when_something_is_pending(make_store: MakeStore) -> None:
    store = make_store()
    async with store.resume("job", initial=0).every(n=10) as cp:
        assert await cp.flush() is False
        await cp.maybe_save(1)
        assert await cp.flush() is True
        assert await cp.flush() is False
        assert cp.version == 1


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"n": 0}, ValueError),
        ({"n": 2.5}, TypeError),
        ({"n": True}, TypeError),
        ({"seconds": 0}, ValueError),
        ({"seconds": float("nan")}, ValueError),
        ({"seconds": "5"}, TypeError),
    ],
)
def test_bad_throttle_settings_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        CheckpointStore().resume("job").every(**options)


async def test_a_refused_state_leaves_the_checkpoint_and_the_run_unchanged(
    make_store: MakeStore,
) -> None:
    store = make_store(max_bytes=50)
    async with store.resume("job", initial=0) as cp:
        await cp.save({"ok": 1})
        with pytest.raises(SerializationError):
            await cp.save({"bad": object()})
        with pytest.raises(CheckpointTooLargeError, match="'job'"):
            await cp.save("x" * 100)
        assert (cp.version, cp.state) == (1, {"ok": 1})
        assert await cp.save({"ok": 2}) == 2


# ----------------------------------------------------------------------------- steps


async def test_a_step_runs_once_and_its_result_survives_a_resume(make_store: MakeStore) -> None:
    store = make_store()
    calls: list[str] = []

    async def fetch(query: str) -> tuple[str, int]:
        calls.append(query)
        return (query, len(calls))

    async with store.resume("agent", initial={"phase": "start"}) as cp:
        first = await cp.step("fetch_docs", fetch, "cats")
        assert first == ["cats", 1]  # the stored (JSON) form, on the first run too
        assert await cp.step("fetch_docs", fetch, "cats") == ["cats", 1]
        assert cp.completed_steps == frozenset({"fetch_docs"})
        assert cp.version == 1  # the step result was saved with the checkpoint
    async with store.resume("agent", initial={"phase": "start"}) as resumed:
        assert await resumed.step("fetch_docs", fetch, "cats") == ["cats", 1]
    assert calls == ["cats"]


async def test_concurrent_calls_of_one_step_run_it_once(make_store: MakeStore) -> None:
    import asyncio

    store = make_store()
    calls = 0
    gate = asyncio.Event()

    async def plan() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "the plan"

    async with store.resume("agent-2", initial={}) as cp:
        first = asyncio.create_task(cp.step("plan", plan))
        second = asyncio.create_task(cp.step("plan", plan))
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(first, second) == ["the plan", "the plan"]
    assert calls == 1


async def test_step_results_are_saved_with_the_current_state(make_store: MakeStore) -> None:
    store = make_store()

    async def plan() -> list[str]:
        return ["a", "b"]

    async with store.resume("agent", initial={"done": []}).every(n=100) as cp:
        await cp.maybe_save({"done": ["warmup"]})
        await cp.step("plan", plan)
        assert not cp.pending
    stored = await store.load("agent")
    assert stored is not None and stored.state == {"done": ["warmup"]} and stored.version == 1


async def test_a_failing_step_stores_nothing_and_runs_again(make_store: MakeStore) -> None:
    store = make_store()
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Boom("first try fails")
        return "ok"

    async with store.resume("agent", initial=None) as cp:
        with pytest.raises(Boom):
            await cp.step("flaky", flaky)
        assert cp.completed_steps == frozenset() and cp.version == 0
        assert await cp.step("flaky", flaky) == "ok"
        assert await cp.step("flaky", flaky) == "ok"
    assert attempts == 2


async def test_a_step_result_that_is_not_json_is_refused(make_store: MakeStore) -> None:
    store = make_store()

    async def bad() -> object:
        return object()

    async with store.resume("agent", initial=None) as cp:
        with pytest.raises(SerializationError, match="step 'bad'"):
            await cp.step("bad", bad)
        assert cp.completed_steps == frozenset()


async def test_step_results_count_towards_max_bytes(make_store: MakeStore) -> None:
    store = make_store(max_bytes=200)

    async def big() -> str:
        return "y" * 300

    async with store.resume("agent", initial="small") as cp:
        with pytest.raises(CheckpointTooLargeError, match="step results"):
            await cp.step("big", big)
        assert cp.completed_steps == frozenset()
        assert await store.load("agent") is None


async def test_plain_saves_keep_the_stored_step_results(make_store: MakeStore) -> None:
    store = make_store()
    calls = 0

    async def once() -> int:
        nonlocal calls
        calls += 1
        return 42

    async with store.resume("agent", initial=0) as cp:
        await cp.step("answer", once)
    await store.save("agent", 1)  # an operator edits the state
    async with store.resume("agent", initial=0) as cp:
        assert cp.state == 1
        assert await cp.step("answer", once) == 42
    assert calls == 1


async def test_bad_step_names_are_refused(make_store: MakeStore) -> None:
    async def nothing() -> None:
        return None

    async with make_store().resume("agent") as cp:
        with pytest.raises(ValueError, match="step name"):
            await cp.step("", nothing)
        with pytest.raises(TypeError, match="step name"):
            await cp.step(3, nothing)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- crash + resume

WORKER = """
import asyncio, sys

from aioresil import CheckpointStore
from aioresil.backends.redis import RedisBackend


async def main(url: str, total: int) -> None:
    backend = RedisBackend.from_url(url)
    store = CheckpointStore(backend, namespace="kill-test")
    async with store.resume("job", initial={"next": 0, "done": []}).every(n=3) as cp:
        print("start", cp.state["next"], flush=True)
        state = cp.state
        for item in range(state["next"], total):
            await asyncio.sleep(0.002)  # the work on one item
            state = {"next": item + 1, "done": state["done"] + [item]}
            if await cp.maybe_save(state):
                print("saved", cp.version, flush=True)
    print("finished", cp.version, flush=True)
    await backend.aclose()
    await backend.client.connection_pool.aclose()


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.slow
@pytest.mark.redis_server
def test_a_worker_killed_mid_loop_resumes_and_processes_every_item_once(
    redis_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), redis_url, "1000"]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    watchdog = threading.Timer(60, worker.kill)
    watchdog.start()
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().split() == ["start", "0"]
        saves = 0
        while saves < 10:
            line = worker.stdout.readline()
            assert line.startswith("saved"), f"worker ended early: {line!r}"
            saves += 1
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=10) == -signal.SIGKILL
        worker.stdout.close()
    finally:
        watchdog.cancel()

    async def checkpoint() -> Any:
        from .conftest import open_redis

        async with open_redis(redis_url) as backend:
            return await CheckpointStore(backend, namespace="kill-test").load("job")

    import asyncio

    killed_at = asyncio.run(checkpoint())
    assert killed_at is not None
    reached = killed_at.state["next"]
    assert 0 < reached < 1000, "the kill must land mid-loop"
    assert killed_at.state["done"] == list(range(reached))

    rerun = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True
    )
    lines = rerun.stdout.splitlines()
    assert lines[0] == f"start {reached}"  # resumed, not restarted
    assert lines[-1].startswith("finished")

    final = asyncio.run(checkpoint())
    assert final is not None
    assert final.state == {"next": 1000, "done": list(range(1000))}  # each item exactly once
    assert final.version == int(lines[-1].split()[1])
