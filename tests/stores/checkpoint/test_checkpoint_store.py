"""CheckpointStore: versions, fencing, listing, history, TTL and bad input, on every backend."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from aioresil import (
    BackendUnavailableError,
    Checkpoint,
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointStore,
    CheckpointTooLargeError,
    MemoryBackend,
    OrjsonSerializer,
    SerializationError,
)
from aioresil.backends.keys import encode_name
from aioresil.testing import FakeClock

from ...helpers import eventually
from ...servers import free_port
from ...wire_spy import WireSpy
from .conftest import MakeStore, clobber_key, corrupt_state, open_redis

# ----------------------------------------------------------------------------- versions


async def test_first_save_is_version_1_and_each_save_adds_one(make_store: MakeStore) -> None:
    store = make_store()
    assert [await store.save("job", {"i": i}) for i in range(4)] == [1, 2, 3, 4]
    loaded = await store.load("job")
    assert loaded is not None
    assert (loaded.task_id, loaded.state, loaded.version) == ("job", {"i": 3}, 4)


async def test_load_of_an_unknown_task_is_none(make_store: MakeStore) -> None:
    assert await make_store().load("never-saved") is None


async def test_updated_at_is_the_store_clock_in_memory_and_redis_time_on_redis(
    make_store: MakeStore, ckpt_kind: str, clock: FakeClock
) -> None:
    store = make_store()
    await store.save("job", 1)
    first = await store.load("job")
    clock.advance(5)
    await store.save("job", 2)
    second = await store.load("job")
    assert first is not None and second is not None
    if ckpt_kind == "memory":
        assert first.updated_at == pytest.approx(clock.time() - 5)
        assert second.updated_at == pytest.approx(clock.time())
    else:
        assert abs(second.updated_at - time.time()) < 60
        assert second.updated_at >= first.updated_at


async def test_loaded_state_is_a_fresh_copy(make_store: MakeStore) -> None:
    store = make_store()
    state: dict[str, Any] = {"items": [1, 2]}
    await store.save("job", state)
    state["items"].append(3)  # the caller keeps mutating its own object
    loaded = await store.load("job")
    assert loaded is not None
    loaded.state["items"].append(99)
    again = await store.load("job")
    assert again is not None and again.state == {"items": [1, 2]}


async def test_checkpoint_is_a_frozen_record(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("job", [1])
    loaded = await store.load("job")
    assert isinstance(loaded, Checkpoint)
    with pytest.raises(AttributeError):
        loaded.version = 9  # type: ignore[misc]


async def test_task_ids_with_separators_and_braces_stay_apart(make_store: MakeStore) -> None:
    store = make_store()
    names = ["a", "a:b", "a:{b}", "a}b", "ü/ñ", "a b", "%41"]
    for i, name in enumerate(names):
        await store.save(name, i)
    for i, name in enumerate(names):
        loaded = await store.load(name)
        assert loaded is not None and loaded.state == i and loaded.version == 1, name


async def test_stores_on_one_backend_and_namespace_share_checkpoints(
    make_store: MakeStore,
) -> None:
    writer, reader = make_store(namespace="n1"), make_store(namespace="n1")
    other = make_store(namespace="n2")
    await writer.save("job", "hello")
    loaded = await reader.load("job")
    assert loaded is not None and loaded.state == "hello"
    assert await other.load("job") is None
    assert await other.save("job", "separate") == 1


# ----------------------------------------------------------------------------- fencing


async def test_expected_version_0_means_must_not_exist(make_store: MakeStore) -> None:
    store = make_store()
    assert await store.save("job", "first", expected_version=0) == 1
    with pytest.raises(CheckpointConflictError) as info:
        await store.save("job", "second", expected_version=0)
    assert (info.value.task_id, info.value.expected_version, info.value.current_version) == (
        "job",
        0,
        1,
    )
    loaded = await store.load("job")
    assert loaded is not None and loaded.state == "first"


async def test_stale_writer_gets_a_conflict_and_writes_nothing(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("job", {"step": 1})
    await store.save("job", {"step": 2}, expected_version=1)
    with pytest.raises(CheckpointConflictError) as info:
        await store.save("job", {"step": "stale"}, expected_version=1)
    assert info.value.current_version == 2
    assert "stored version is 2" in str(info.value)
    loaded = await store.load("job")
    assert loaded is not None and loaded.state == {"step": 2} and loaded.version == 2


async def test_expected_version_on_a_missing_task_conflicts_with_current_0(
    make_store: MakeStore,
) -> None:
    store = make_store()
    with pytest.raises(CheckpointConflictError) as info:
        await store.save("job", 1, expected_version=3)
    assert info.value.current_version == 0
    assert await store.load("job") is None


async def test_50_concurrent_writers_exactly_one_wins_per_version(make_store: MakeStore) -> None:
    stores = [make_store() for _ in range(50)]  # one store object per "process"
    wins: list[int] = []
    conflicts = 0

    async def writer(store: CheckpointStore, me: int) -> None:
        nonlocal conflicts
        for _ in range(4):
            current = await store.load("race")
            seen = 0 if current is None else current.version
            await asyncio.sleep(0)  # let the others read the same version (memory never yields)
            try:
                wins.append(await store.save("race", {"by": me}, expected_version=seen))
            except CheckpointConflictError as error:
                assert error.current_version > seen
                conflicts += 1

    await asyncio.gather(*(writer(store, i) for i, store in enumerate(stores)))
    assert sorted(wins) == list(range(1, len(wins) + 1))  # one winner per version, no gap
    assert len(wins) + conflicts == 50 * 4
    assert conflicts > 0
    final = await stores[0].load("race")
    assert final is not None and final.version == len(wins)


async def test_50_concurrent_creators_only_one_succeeds(make_store: MakeStore) -> None:
    store = make_store()
    results = await asyncio.gather(
        *(store.save("fresh", i, expected_version=0) for i in range(50)), return_exceptions=True
    )
    winners = [r for r in results if r == 1]
    losers = [r for r in results if isinstance(r, CheckpointConflictError)]
    assert len(winners) == 1 and len(losers) == 49
    assert all(error.current_version == 1 for error in losers)


# ----------------------------------------------------------------------------- delete


async def test_delete_removes_state_and_history_and_restarts_versions(
    make_store: MakeStore,
) -> None:
    store = make_store(keep_history=3)
    await store.save("job", 1)
    await store.save("job", 2)
    assert await store.delete("job") is True
    assert await store.load("job") is None
    assert await store.history("job") == []
    assert await store.delete("job") is False
    assert await store.save("job", 3, expected_version=0) == 1


async def test_delete_with_a_stale_expected_version_conflicts(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("job", 1)
    await store.save("job", 2)
    with pytest.raises(CheckpointConflictError) as info:
        await store.delete("job", expected_version=1)
    assert info.value.current_version == 2
    assert await store.load("job") is not None
    assert await store.delete("job", expected_version=2) is True


# ----------------------------------------------------------------------------- list


async def test_list_pages_through_every_task_in_order_with_a_cursor(
    make_store: MakeStore,
) -> None:
    store = make_store()
    names = [f"task-{i:03d}" for i in range(57)]
    for name in reversed(names):
        await store.save(name, name)
    seen: list[str] = []
    page = await store.list(limit=10)
    pages = 1
    while True:
        assert len(page.entries) <= 10
        seen += [entry.task_id for entry in page.entries]
        assert all(entry.version == 1 for entry in page.entries)
        if page.next_cursor is None:
            break
        page = await store.list(limit=10, cursor=page.next_cursor)
        pages += 1
    assert seen == names
    assert pages in (6, 7)  # 57 entries in pages of 10 (+1 empty page at most)


async def test_list_filters_by_prefix_and_iter_walks_all_pages(make_store: MakeStore) -> None:
    store = make_store()
    for name in ["user:1/a", "user:1/b", "user:10/a", "user:2/a", "zeta"]:
        await store.save(name, 0)
    page = await store.list(prefix="user:1/")
    assert [e.task_id for e in page.entries] == ["user:1/a", "user:1/b"]
    assert page.next_cursor is None
    walked = [s.task_id async for s in store.iter(prefix="user:", page_size=1)]
    assert walked == ["user:1/a", "user:1/b", "user:10/a", "user:2/a"]
    everything = [s.task_id async for s in store.iter(page_size=2)]
    assert len(everything) == 5


async def test_list_order_is_the_encoded_id_order_on_every_backend(
    make_store: MakeStore,
) -> None:
    store = make_store()
    names = ["a b", "a%", "a-", "a.", "a/", "a~", "aZ", "a0", "é", "a"]
    for name in names:
        await store.save(name, name)
    listed = [s.task_id async for s in store.iter(page_size=3)]
    assert listed == sorted(names, key=encode_name)


async def test_a_cursor_outside_the_prefix_range_starts_at_the_range(
    make_store: MakeStore,
) -> None:
    store = make_store()
    for name in ["a1", "b1", "b2", "c1"]:
        await store.save(name, 0)
    page = await store.list(prefix="b", cursor="a1")
    assert [e.task_id for e in page.entries] == ["b1", "b2"]
    page = await store.list(prefix="b", cursor="b1")
    assert [e.task_id for e in page.entries] == ["b2"]


async def test_list_reports_versions_and_skips_deleted_tasks(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("a", 1)
    await store.save("b", 1)
    await store.save("b", 2)
    await store.save("c", 1)
    await store.delete("a")
    page = await store.list()
    assert [(e.task_id, e.version) for e in page.entries] == [("b", 2), ("c", 1)]


# ----------------------------------------------------------------------------- history


async def test_history_keeps_the_newest_versions_only(make_store: MakeStore) -> None:
    store = make_store(keep_history=3)
    for i in range(1, 6):
        await store.save("job", {"i": i})
    history = await store.history("job")
    assert [(c.version, c.state) for c in history] == [(5, {"i": 5}), (4, {"i": 4}), (3, {"i": 3})]
    assert all(c.task_id == "job" for c in history)
    assert history[0].updated_at >= history[-1].updated_at


async def test_no_history_is_kept_with_keep_history_0(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("job", 1)
    await store.save("job", 2)
    assert await store.history("job") == []


async def test_a_store_without_history_drops_the_history_of_tasks_it_saves(
    make_store: MakeStore,
) -> None:
    await make_store(keep_history=5).save("job", 1)
    await make_store(keep_history=0).save("job", 2)
    assert await make_store(keep_history=5).history("job") == []


# ----------------------------------------------------------------------------- TTL


async def test_ttl_expires_checkpoints_on_the_fake_clock_in_memory(clock: FakeClock) -> None:
    backend = MemoryBackend()
    store = CheckpointStore(backend, ttl=10, keep_history=2, clock=clock)
    await store.save("job", 1)
    clock.advance(9)
    await store.save("job", 2)  # every save renews the TTL
    clock.advance(9)
    loaded = await store.load("job")
    assert loaded is not None and loaded.version == 2
    clock.advance(1)
    assert await store.load("job") is None
    assert await store.history("job") == []
    assert (await store.list()).entries == ()
    assert await store.save("job", 3, expected_version=0) == 1


@pytest.mark.redis_server
async def test_ttl_expires_checkpoints_on_real_redis_and_list_drops_them(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as backend:
        store = CheckpointStore(backend, namespace="ttl", ttl=0.2, keep_history=2)
        forever = CheckpointStore(backend, namespace="ttl")
        await store.save("short", 1)
        await forever.save("long", 1)
        data_key = backend.key("ckpt", "ttl", "d:short")
        history_key = backend.key("ckpt", "ttl", "h:short")
        assert 0 < await backend.client.pttl(data_key) <= 200
        assert 0 < await backend.client.pttl(history_key) <= 200
        assert await backend.client.pttl(backend.key("ckpt", "ttl", "d:long")) == -1

        async def expired() -> bool:
            return await backend.client.exists(data_key, history_key) == 0

        await eventually(expired, what="Redis expiring the checkpoint's keys")
        assert await store.load("short") is None
        index = backend.key("ckpt", "ttl", "index")
        assert await backend.client.zcard(index) == 2  # the expired member is still indexed
        page = await store.list()
        assert [e.task_id for e in page.entries] == ["long"]
        assert await backend.client.zrange(index, 0, -1) == [b"long"]  # dropped lazily


async def test_saving_without_ttl_makes_a_checkpoint_permanent_again(
    make_store: MakeStore, ckpt_kind: str, clock: FakeClock
) -> None:
    await make_store(ttl=10).save("job", 1)
    await make_store().save("job", 2)
    clock.advance(3600)
    loaded = await make_store().load("job")
    assert loaded is not None and loaded.version == 2
    if ckpt_kind != "memory":
        store = make_store()
        key = store.backend.key("ckpt", "default", "d:job")
        assert await store.backend.client.pttl(key) == -1


# ----------------------------------------------------------------------------- bad input


async def test_non_json_state_is_refused_before_any_io(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("job", {"ok": True})
    for bad in [{"x": object()}, {"x": float("nan")}, {1, 2}, b"bytes"]:
        with pytest.raises(SerializationError, match="checkpoint state of 'job'"):
            await store.save("job", bad)
    loaded = await store.load("job")
    assert loaded is not None and loaded.version == 1 and loaded.state == {"ok": True}


async def test_state_over_max_bytes_raises_too_large_and_stores_nothing(
    make_store: MakeStore,
) -> None:
    store = make_store(max_bytes=1000)
    with pytest.raises(CheckpointTooLargeError) as info:
        await store.save("big", "x" * 2000)
    message = str(info.value)
    assert "'big'" in message and "2002 bytes" in message and "max_bytes=1000" in message
    assert isinstance(info.value, ValueError)
    assert await store.load("big") is None
    assert (await store.list()).entries == ()
    assert await store.save("big", "x" * 998) == 1  # exactly max_bytes is accepted


@pytest.mark.parametrize(
    ("task_id", "error"), [("", ValueError), (None, TypeError), (7, TypeError), (b"j", TypeError)]
)
async def test_bad_task_ids_are_refused(
    make_store: MakeStore, task_id: Any, error: type[Exception]
) -> None:
    store = make_store()
    with pytest.raises(error, match="task_id"):
        await store.save(task_id, 1)
    with pytest.raises(error, match="task_id"):
        await store.load(task_id)
    with pytest.raises(error, match="task_id"):
        store.resume(task_id)


@pytest.mark.parametrize(
    ("expected", "error"), [(-1, ValueError), (True, TypeError), ("1", TypeError), (1.0, TypeError)]
)
async def test_bad_expected_versions_are_refused(
    make_store: MakeStore, expected: Any, error: type[Exception]
) -> None:
    store = make_store()
    with pytest.raises(error, match="expected_version"):
        await store.save("job", 1, expected_version=expected)
    assert await store.load("job") is None


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -1.5}, ValueError, "ttl"),
        ({"ttl": math.inf}, ValueError, "ttl"),
        ({"ttl": "10"}, TypeError, "ttl"),
        ({"keep_history": -1}, ValueError, "keep_history"),
        ({"keep_history": 2.5}, TypeError, "keep_history"),
        ({"max_bytes": 0}, ValueError, "max_bytes"),
        ({"max_bytes": True}, TypeError, "max_bytes"),
        ({"namespace": ""}, ValueError, "namespace"),
        ({"serializer": "json"}, TypeError, "serializer"),
        ({"backend": "redis://x"}, TypeError, "backend"),
    ],
)
def test_bad_store_options_are_refused_at_construction(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        CheckpointStore(**options)


async def test_bad_list_arguments_are_refused(make_store: MakeStore) -> None:
    store = make_store()
    with pytest.raises(ValueError, match="limit"):
        await store.list(limit=0)
    with pytest.raises(TypeError, match="limit"):
        await store.list(limit="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cursor"):
        await store.list(cursor="(evil")
    with pytest.raises(TypeError, match="prefix"):
        await store.list(prefix=3)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- corruption


async def test_undecodable_state_raises_corrupt_naming_the_task(make_store: MakeStore) -> None:
    store = make_store()
    await store.save("job-7", {"ok": 1})
    await corrupt_state(store, "job-7", b"{not json")
    with pytest.raises(CheckpointCorruptError, match="'job-7'") as info:
        await store.load("job-7")
    assert "delete" in str(info.value)
    assert await store.delete("job-7") is True  # the way out of a crash loop
    assert await store.save("job-7", {"ok": 2}) == 1


@pytest.mark.parametrize("ckpt_kind", ["fakeredis", "redis"])
async def test_a_key_of_the_wrong_type_is_corrupt_not_a_redis_error(
    make_store: MakeStore,
) -> None:
    store = make_store()
    await store.save("job", 1)
    await clobber_key(store, "job")
    with pytest.raises(CheckpointCorruptError, match=r"'job'.*not a hash"):
        await store.load("job")
    with pytest.raises(CheckpointCorruptError, match="'job'"):
        await store.save("job", 2)
    page = await store.list()
    assert [(e.task_id, e.version) for e in page.entries] == [("job", 0)]
    assert await store.delete("job") is True
    assert await store.save("job", 3) == 1


# ----------------------------------------------------------------------------- Redis layout


@pytest.mark.parametrize("ckpt_kind", ["fakeredis", "redis"])
async def test_all_keys_of_a_namespace_share_one_hash_tag(make_store: MakeStore) -> None:
    store = make_store(namespace="tenant:{eu}", keep_history=1)
    await store.save("a:{b}", 1)
    await store.save("c", 1)
    keys = sorted(k.decode() for k in await store.backend.client.keys("*"))
    tag = "{ckpt:" + encode_name("tenant:{eu}") + "}"
    assert keys == sorted(
        f"aioresil:{tag}:{part}"
        for part in [
            "d:" + encode_name("a:{b}"),
            "b:" + encode_name("a:{b}"),
            "h:" + encode_name("a:{b}"),
            "d:c",
            "b:c",
            "h:c",
            "index",
        ]
    )


@pytest.mark.parametrize("ckpt_kind", ["fakeredis", "redis"])
async def test_each_operation_is_one_round_trip_running_one_script(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(ttl=60, keep_history=2)
    await store.save("job", 1)  # loads the scripts that are not cached yet
    await store.load("job")
    await store.list()
    await store.history("job")
    await store.delete("nothing")
    spy = WireSpy(store.backend.client)
    await store.save("job", 2, expected_version=1)
    assert spy.writes == [["EVALSHA"]]
    # A large state is staged (SET) and moved by the script (RENAME): one pipelined trip.
    spy.reset()
    assert await store.save("big", "x" * 20_000) == 1
    assert spy.writes == [["SET", "EVALSHA"]]
    spy.reset()
    await store.load("job")
    await store.list()
    await store.history("job")
    await store.delete("job", expected_version=2)
    assert spy.writes == [["EVALSHA"]] * 4
    loaded = await store.load("big")
    assert loaded is not None and loaded.state == "x" * 20_000


@pytest.mark.redis_server
async def test_saves_reload_their_script_after_a_script_flush(redis_url: str) -> None:
    async with open_redis(redis_url) as backend:
        store = CheckpointStore(backend)
        await store.save("job", 1)
        await backend.client.script_flush()
        assert await store.save("job", 2, expected_version=1) == 2


async def test_an_unreachable_redis_is_a_backend_unavailable_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with open_redis(url, socket_connect_timeout=0.5) as backend:
        store = CheckpointStore(backend)
        with pytest.raises(BackendUnavailableError):
            await store.save("job", 1)
        with pytest.raises(BackendUnavailableError):
            await store.load("job")


@pytest.mark.redis_server
async def test_a_record_written_before_the_state_had_its_own_key_loads_and_saves(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as backend:
        store = CheckpointStore(backend, namespace="old")
        record = backend.key("ckpt", "old", "d:job")
        # The layout of earlier versions: the state in the record hash's field d.
        await backend.client.hset(record, mapping={"d": b'{"n":3}', "v": 3, "t": 1})
        loaded = await store.load("job")
        assert loaded is not None and (loaded.version, loaded.state) == (3, {"n": 3})
        assert await store.save("job", {"n": 4}, expected_version=3) == 4
        assert await backend.client.hget(record, "d") is None  # moved out on the first save
        loaded = await store.load("job")
        assert loaded is not None and (loaded.version, loaded.state) == (4, {"n": 4})


@pytest.mark.redis_server
async def test_a_staged_state_keeps_the_stores_ttl_and_leaves_no_staging_key(
    redis_url: str,
) -> None:
    async with open_redis(redis_url) as backend:
        big = "x" * 50_000
        forever = CheckpointStore(backend, namespace="forever")
        await forever.save("job", big)
        assert await backend.client.ttl(backend.key("ckpt", "forever", "b:job")) == -1
        daily = CheckpointStore(backend, namespace="daily", ttl=86_400)
        await daily.save("job", big)
        assert 0 < await backend.client.ttl(backend.key("ckpt", "daily", "b:job")) <= 86_400
        assert [k async for k in backend.client.scan_iter(match="*stage*")] == []


async def test_orjson_and_default_serializers_share_checkpoints_mid_upgrade(
    make_store: MakeStore,
) -> None:
    """A fleet mid-upgrade: workers on JsonSerializer and on OrjsonSerializer read each
    other's saves, and the fast one refuses what the default refuses, before any I/O."""
    old = make_store(namespace="fleet")  # the default, JsonSerializer
    new = make_store(namespace="fleet", serializer=OrjsonSerializer())
    with pytest.raises(SerializationError, match="Out of range float"):
        await new.save("job", {"score": math.nan})
    assert await new.load("job") is None  # nothing was stored
    state = {"n": 2**64, "s": "lone \udcff", "f": 0.1, "blob": "x" * 20_000}  # staged on Redis
    v = await old.save("job", state)
    loaded = await new.load("job")
    assert loaded is not None and loaded.state == state
    assert await new.save("job", {**state, "n": -1}, expected_version=v) == v + 1
    loaded = await old.load("job")
    assert loaded is not None and loaded.state == {**state, "n": -1}
