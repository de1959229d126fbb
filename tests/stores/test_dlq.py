"""The dead letter queue: every operation on memory, fakeredis and a real Redis server.

One suite, parametrized over the three storages, so the Lua scripts and the in-process
storage are held to the same behaviour. Time is a FakeClock injected into the queue (on
Redis its reading is passed to the scripts), so lease expiry is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from aioresil import (
    DeadLetter,
    DeadLetterEvicted,
    DeadLetterQueue,
    DeadLetterQueueFullError,
    DeadLetterStats,
    DeadLetterTooLargeError,
    DeadLetterUnavailableError,
    MemoryBackend,
    RedisBackend,
    RetryCounts,
    SerializationError,
)
from aioresil.health import dlq_health
from aioresil.testing import FakeClock

MakeDlq = Callable[..., DeadLetterQueue]


class Boom(Exception):
    """The failure our fake tasks raise."""


def raised(message: str = "upstream down") -> Boom:
    """A Boom with a real traceback, as a task's failure would have."""
    try:
        raise Boom(message)
    except Boom as exc:
        return exc


@pytest.fixture(params=["memory", "fakeredis", "redis"])
async def dlq_backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    kind = request.param
    if kind == "memory":
        yield MemoryBackend()
    elif kind == "fakeredis":
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        yield RedisBackend(client)
        await client.aclose()
    else:
        url = request.getfixturevalue("redis_url")
        backend = RedisBackend.from_url(url)
        yield backend
        await backend.aclose()


@pytest.fixture
def make_dlq(dlq_backend: Any, clock: FakeClock) -> MakeDlq:
    def make(**options: Any) -> DeadLetterQueue:
        options.setdefault("clock", clock)
        return DeadLetterQueue(dlq_backend, **options)

    return make


@pytest.fixture
def dlq(make_dlq: MakeDlq) -> DeadLetterQueue:
    return make_dlq()


def at(clock: FakeClock) -> datetime:
    """The fake wall clock's reading, as stored (millisecond precision)."""
    return datetime.fromtimestamp(int(clock.time() * 1000) / 1000, tz=UTC)


async def fill(dlq: DeadLetterQueue, clock: FakeClock, types: list[str]) -> list[str]:
    """Push one entry per type, one second apart; return their ids in push order."""
    ids = []
    for i, task_type in enumerate(types):
        ids.append(await dlq.push(task_type, {"n": i}, raised(f"failure {i}")))
        clock.advance(1)
    return ids


# ---------------------------------------------------------------- push / get


async def test_push_then_get_returns_every_field(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    when = at(clock)
    entry_id = await dlq.push(
        "send_email",
        {"to": "a@example.com", "n": [1, 2]},
        raised("smtp refused"),
        attempts=3,
        task_id="task-7",
        metadata={"tenant": "acme"},
    )
    letter = await dlq.get(entry_id)
    assert letter == DeadLetter(
        id=entry_id,
        task_type="send_email",
        task_id="task-7",
        payload={"to": "a@example.com", "n": [1, 2]},
        error_type="Boom",
        error_message="smtp refused",
        traceback=letter.traceback if letter else None,
        attempts=3,
        first_failed_at=when,
        failed_at=when,
        metadata={"tenant": "acme"},
    )
    assert letter is not None and letter.traceback is not None
    assert "Boom: smtp refused" in letter.traceback
    assert letter.idempotency_key == f"{entry_id}:3"


async def test_a_string_error_is_kept_as_the_message(dlq: DeadLetterQueue) -> None:
    letter = await dlq.get(await dlq.push("t", None, "gave up after 5 tries"))
    assert letter is not None
    assert (letter.error_type, letter.error_message, letter.traceback) == (
        None,
        "gave up after 5 tries",
        None,
    )
    assert (letter.task_id, letter.metadata, letter.attempts) == (None, {}, 1)


async def test_tracebacks_are_cut_to_their_last_characters(make_dlq: MakeDlq) -> None:
    dlq = make_dlq(max_traceback_chars=50)
    letter = await dlq.get(await dlq.push("t", 1, raised("x" * 200)))
    assert letter is not None and letter.traceback is not None
    assert letter.traceback.startswith("...\n")
    assert len(letter.traceback) == 54
    assert letter.traceback.endswith("x\n")


async def test_get_of_an_unknown_or_malformed_id_is_none(dlq: DeadLetterQueue) -> None:
    await dlq.push("t", 1, "e")
    assert await dlq.get("0123456789ab-0123456789abcdef") is None
    assert await dlq.get("not an id:{}") is None
    assert await dlq.remove("not an id") is False


async def test_ids_sort_in_push_order(dlq: DeadLetterQueue) -> None:
    ids = [await dlq.push("t", i, "e") for i in range(50)]  # all in the same fake millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == 50


async def test_a_custom_serializer_is_used_both_ways(make_dlq: MakeDlq) -> None:
    class Upper:
        def dumps(self, obj: Any) -> bytes:
            return str(obj).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode().lower()

    dlq = make_dlq(serializer=Upper())
    letter = await dlq.get(await dlq.push("t", "Hello", "e"))
    assert letter is not None and letter.payload == "hello"


# ---------------------------------------------------------------- list / count


async def test_list_is_newest_first_and_pages_cover_every_entry_once(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    ids = await fill(dlq, clock, ["t"] * 25)
    seen: list[str] = []
    page = await dlq.list(limit=10)
    pages = 1
    seen += [e.id for e in page.entries]
    while page.next_cursor is not None:
        page = await dlq.list(limit=10, cursor=page.next_cursor)
        pages += 1
        seen += [e.id for e in page.entries]
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_a_page_that_ends_exactly_at_the_last_entry_has_no_cursor(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await fill(dlq, clock, ["t"] * 4)
    page = await dlq.list(limit=4)
    assert len(page.entries) == 4 and page.next_cursor is None
    assert (await dlq.list(limit=3)).next_cursor is not None


async def test_list_filters_by_task_type_and_time_window(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    start = at(clock)
    ids = await fill(dlq, clock, ["a", "b", "a", "b", "a", "b"])
    only_a = await dlq.list(task_type="a")
    assert [e.id for e in only_a.entries] == [ids[4], ids[2], ids[0]]
    window = await dlq.list(since=start + timedelta(seconds=1), until=start + timedelta(seconds=4))
    assert [e.id for e in window.entries] == [ids[3], ids[2], ids[1]]
    both = await dlq.list(task_type="b", since=start + timedelta(seconds=2))
    assert [e.id for e in both.entries] == [ids[5], ids[3]]
    paged = await dlq.list(task_type="a", limit=1, until=start + timedelta(seconds=4))
    assert [e.id for e in paged.entries] == [ids[2]]
    rest = await dlq.list(task_type="a", limit=5, cursor=paged.next_cursor)
    assert [e.id for e in rest.entries] == [ids[0]]
    assert (await dlq.list(task_type="never")).entries == ()


async def test_count_in_total_and_per_type(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    assert await dlq.count() == 0
    await fill(dlq, clock, ["a", "b", "a"])
    assert await dlq.count() == 3
    assert await dlq.count(task_type="a") == 2
    assert await dlq.count(task_type="zzz") == 0


async def test_two_queue_objects_of_one_name_share_entries(make_dlq: MakeDlq) -> None:
    first, second, other = make_dlq(name="orders"), make_dlq(name="orders"), make_dlq(name="x")
    entry_id = await first.push("t", 1, "e")
    assert await second.get(entry_id) is not None
    assert await other.get(entry_id) is None
    assert (await second.count(), await other.count()) == (1, 0)


async def test_names_with_unicode_and_key_syntax_stay_apart(make_dlq: MakeDlq) -> None:
    names = ["a", "a:b", "a:{b}", "{a}", "ü:{x}} y"]
    queues = {name: make_dlq(name=name) for name in names}
    for i, (name, dlq) in enumerate(queues.items()):
        for _ in range(i + 1):
            await dlq.push("type:{x}", name, "e")
            await dlq.push("ü é", name, "e")
    for i, (name, dlq) in enumerate(queues.items()):
        assert await dlq.count(task_type="type:{x}") == i + 1
        page = await dlq.list(task_type="ü é")
        assert {e.payload for e in page.entries} == {name}
        assert (await dlq.stats())["failures_by_task_type"] == {"type:{x}": i + 1, "ü é": i + 1}


# ---------------------------------------------------------------- stats / health


async def test_stats_of_an_empty_queue(dlq: DeadLetterQueue) -> None:
    stats = await dlq.stats()
    assert isinstance(stats, DeadLetterStats)
    assert (stats.total_failed_tasks, stats.oldest_failure, stats.in_flight) == (0, None, 0)
    assert stats.to_dict() == {
        "total_failed_tasks": 0,
        "recent_failures_24h": 0,
        "failures_by_task_type": {},
        "oldest_failure": None,
        "newest_failure": None,
        "in_flight": 0,
        "evicted": 0,
        "expired": 0,
        "spooled": 0,
    }


async def test_stats_count_types_recent_failures_and_both_ends(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    oldest = at(clock)
    await fill(dlq, clock, ["a", "a", "b"])
    clock.advance(2 * 86_400)
    recent_start = at(clock)
    await fill(dlq, clock, ["b", "c"])
    stats = await dlq.stats()
    assert stats.total_failed_tasks == 5
    assert stats.recent_failures_24h == 2
    assert stats.failures_by_task_type == {"a": 2, "b": 2, "c": 1}
    assert stats.oldest_failure == oldest
    assert stats.newest_failure == recent_start + timedelta(seconds=1)
    assert stats.to_dict()["oldest_failure"] == oldest.isoformat()
    assert stats["total_failed_tasks"] == 5  # the 0.x dict-style read still answers


@pytest.mark.parametrize(
    ("entries", "status", "attention"),
    [(0, "healthy", False), (9, "healthy", False), (10, "degraded", True),
     (49, "degraded", True), (50, "unhealthy", True)],
)  # fmt: skip
async def test_health_status_follows_the_thresholds(
    dlq: DeadLetterQueue, clock: FakeClock, entries: int, status: str, attention: bool
) -> None:
    for i in range(entries):
        await dlq.push("a" if i % 3 else "b", i, "e")
    body = await dlq_health(dlq)
    assert body["status"] == status
    assert body["timestamp"] == datetime.fromtimestamp(clock.time(), tz=UTC).isoformat()
    assert body["statistics"] == (await dlq.stats()).to_dict()
    assert body["health_indicators"] == {
        "total_failed_tasks": entries,
        "recent_failures_24h": entries,
        "requires_attention": attention,
        "critical_threshold": 50,
        "warning_threshold": 10,
    }
    assert set(body) == {
        "status", "timestamp", "statistics", "health_indicators", "recommendations"
    }  # fmt: skip


async def test_health_recommendations(dlq: DeadLetterQueue) -> None:
    assert (await dlq_health(dlq))["recommendations"] == [
        "DLQ is empty - system operating normally"
    ]
    await dlq.push("a", 1, "e")
    advice = (await dlq_health(dlq, warning_threshold=2, critical_threshold=3))["recommendations"]
    assert advice == ["DLQ has 1 failed tasks - monitor for trends"]
    for _ in range(3):
        await dlq.push("b", 1, "e")
    advice = (await dlq_health(dlq, warning_threshold=2, critical_threshold=3))["recommendations"]
    assert advice[0].startswith("DLQ has 4 failed tasks (critical threshold 3)")
    assert "Task type 'b' accounts for 3 of 4 failures - check it first" in advice
    assert any("4 failures in the last 24 hours" in line for line in advice)


async def test_health_rejects_inverted_thresholds(dlq: DeadLetterQueue) -> None:
    with pytest.raises(ValueError, match="warning_threshold <= critical_threshold"):
        await dlq_health(dlq, warning_threshold=10, critical_threshold=5)


# ---------------------------------------------------------------- retry


async def test_a_successful_retry_deletes_the_entry(dlq: DeadLetterQueue) -> None:
    entry_id = await dlq.push("t", {"x": 1}, "e", attempts=2)
    received: list[DeadLetter] = []

    async def handler(letter: DeadLetter) -> None:
        received.append(letter)

    assert await dlq.retry(entry_id, handler) is True
    assert [(r.id, r.payload, r.idempotency_key) for r in received] == [
        (entry_id, {"x": 1}, f"{entry_id}:2")
    ]
    assert await dlq.get(entry_id) is None
    stats = await dlq.stats()
    assert (stats["total_failed_tasks"], stats["in_flight"]) == (0, 0)
    assert stats["failures_by_task_type"] == {}


async def test_a_failed_retry_keeps_the_entry_with_one_more_attempt_and_the_new_error(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    first = at(clock)
    entry_id = await dlq.push("t", 1, raised("first"))
    other = await dlq.push("t", 2, "e")
    clock.advance(10)

    async def handler(letter: DeadLetter) -> None:
        raise ValueError("still broken")

    assert await dlq.retry(entry_id, handler) is False
    letter = await dlq.get(entry_id)
    assert letter is not None
    assert (letter.attempts, letter.error_type, letter.error_message) == (
        2,
        "ValueError",
        "still broken",
    )
    assert letter.traceback is not None and "still broken" in letter.traceback
    assert (letter.first_failed_at, letter.failed_at) == (first, at(clock))
    assert [e.id for e in (await dlq.list()).entries] == [entry_id, other]  # moved to "now"
    assert (await dlq.stats())["in_flight"] == 0
    assert (await dlq.claim(entry_id)).entry.idempotency_key == f"{entry_id}:2"


async def test_retry_of_a_missing_entry_is_a_clear_error(dlq: DeadLetterQueue) -> None:
    async def handler(letter: DeadLetter) -> None:
        raise AssertionError("must not run")

    with pytest.raises(DeadLetterUnavailableError, match="does not exist") as info:
        await dlq.retry("0123456789ab-0123456789abcdef", handler)
    assert info.value.reason == "missing"


async def test_a_leased_entry_cannot_be_claimed_until_its_lease_expires(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    entry_id = await dlq.push("t", 1, "e")
    await dlq.claim(entry_id, lease=30)
    assert (await dlq.stats())["in_flight"] == 1
    assert await dlq.count() == 1  # a leased entry is still in the queue
    clock.advance(29.9)
    with pytest.raises(DeadLetterUnavailableError, match="leased by another worker"):
        await dlq.claim(entry_id)
    clock.advance(0.2)
    assert (await dlq.stats())["in_flight"] == 0
    again = await dlq.claim(entry_id)
    assert again.entry.id == entry_id


async def test_two_workers_never_both_settle_one_entry(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    entry_id = await dlq.push("t", 1, "e")
    slow = await dlq.claim(entry_id, lease=5)
    clock.advance(6)  # the slow worker's lease expired while its handler ran
    fast = await dlq.claim(entry_id, lease=5)
    assert fast.token != slow.token
    assert await dlq.ack(slow) is False
    assert await dlq.nack(slow, "late") is False
    assert await dlq.release(slow) is False
    assert (await dlq.get(entry_id)) == fast.entry  # the slow worker changed nothing
    assert await dlq.ack(fast) is True
    assert await dlq.get(entry_id) is None
    assert await dlq.ack(fast) is False


async def test_concurrent_retries_of_one_entry_run_the_handler_once(
    dlq: DeadLetterQueue,
) -> None:
    entry_id = await dlq.push("t", 1, "e")
    calls = 0

    async def handler(letter: DeadLetter) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)

    outcomes = await asyncio.gather(
        *(dlq.retry(entry_id, handler) for _ in range(20)), return_exceptions=True
    )
    assert calls == 1
    assert outcomes.count(True) == 1
    assert all(isinstance(o, DeadLetterUnavailableError) for o in outcomes if o is not True)
    assert await dlq.count() == 0


async def test_a_cancelled_retry_gives_the_lease_back(dlq: DeadLetterQueue) -> None:
    entry_id = await dlq.push("t", 1, "e")
    started = asyncio.Event()

    async def handler(letter: DeadLetter) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(dlq.retry(entry_id, handler))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    held = await dlq.claim(entry_id)  # free again at once, attempts unchanged
    assert held.entry.attempts == 1


async def test_an_acknowledged_entry_that_was_evicted_meanwhile_is_not_resurrected(
    make_dlq: MakeDlq,
) -> None:
    dlq = make_dlq(max_entries=1, overflow="evict_oldest")
    entry_id = await dlq.push("t", 1, "e")
    held = await dlq.claim(entry_id)
    await dlq.push("t", 2, "e")  # evicts the leased entry
    assert await dlq.nack(held, "failed again") is False
    assert await dlq.get(entry_id) is None
    assert await dlq.count() == 1


# ---------------------------------------------------------------- retry_all


async def test_retry_all_reports_per_type_with_bounded_concurrency(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await fill(dlq, clock, ["a", "b"] * 30)
    running = peak = 0
    reports: list[int] = []
    all_busy = asyncio.Event()

    async def handler(letter: DeadLetter) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 4:
            all_busy.set()
        await all_busy.wait()  # the first handlers wait until four run at once
        await asyncio.sleep(0)
        running -= 1
        if letter.task_type == "b" and letter.payload["n"] % 4 == 1:
            raise Boom("still failing")

    report = await dlq.retry_all(handler, concurrency=4, progress=lambda r: reports.append(r.total))
    assert peak == 4
    assert (report.succeeded, report.failed, report.skipped) == (45, 15, 0)
    assert report.by_task_type == {"a": RetryCounts(30, 0, 0), "b": RetryCounts(15, 15, 0)}
    assert reports == list(range(1, 61))
    assert await dlq.count() == 15
    assert await dlq.count(task_type="b") == 15


async def test_retry_all_filters_by_type_and_stops_at_the_limit(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    ids = await fill(dlq, clock, ["a", "b"] * 5)
    seen: list[str] = []

    async def handler(letter: DeadLetter) -> None:
        seen.append(letter.id)

    report = await dlq.retry_all(handler, task_type="a", limit=3, concurrency=1)
    assert report.succeeded == 3
    assert seen == [ids[8], ids[6], ids[4]]  # newest first
    assert await dlq.count(task_type="a") == 2
    assert await dlq.count(task_type="b") == 5


async def test_retry_all_tries_a_failing_entry_once_per_run_and_skips_leased_ones(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    ids = await fill(dlq, clock, ["a"] * 5)
    await dlq.claim(ids[0], lease=60)  # another worker is on it
    calls: list[str] = []

    async def handler(letter: DeadLetter) -> None:
        calls.append(letter.id)
        clock.advance(1)  # a failed entry moves to "now", above the run's cursor
        raise Boom("no")

    report = await dlq.retry_all(handler, concurrency=2)
    assert sorted(calls) == sorted(ids[1:])
    assert (report.succeeded, report.failed, report.skipped) == (0, 4, 1)
    assert await dlq.count() == 5


async def test_retry_all_pages_through_more_entries_than_one_page(dlq: DeadLetterQueue) -> None:
    for i in range(450):
        await dlq.push("t", i, "e")
    seen: set[int] = set()

    async def handler(letter: DeadLetter) -> None:
        seen.add(letter.payload)

    report = await dlq.retry_all(handler, concurrency=8)
    assert report.succeeded == 450
    assert seen == set(range(450))
    assert await dlq.count() == 0


# ---------------------------------------------------------------- remove / purge


async def test_remove_deletes_one_entry_and_its_indexes(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    ids = await fill(dlq, clock, ["a", "a", "b"])
    assert await dlq.remove(ids[0]) is True
    assert await dlq.remove(ids[0]) is False
    assert await dlq.get(ids[0]) is None
    assert [e.id for e in (await dlq.list(task_type="a")).entries] == [ids[1]]
    assert (await dlq.stats())["failures_by_task_type"] == {"a": 1, "b": 1}


async def test_purge_by_age_by_date_by_type_and_everything(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    start = at(clock)
    ids = await fill(dlq, clock, ["a", "b", "a", "b", "a", "b"])  # t = 0..5 s
    assert await dlq.purge(older_than=start + timedelta(seconds=1)) == 1  # before t=1
    clock.advance(0)  # now = t=6 s
    assert await dlq.purge(older_than=timedelta(seconds=3.5), task_type="a") == 1  # t=2
    assert await dlq.purge(older_than=4.5) == 1  # t=1
    assert [e.id for e in (await dlq.list()).entries] == [ids[5], ids[4], ids[3]]
    assert await dlq.purge(task_type="b") == 2
    assert await dlq.purge() == 1
    stats = await dlq.stats()
    assert (stats["total_failed_tasks"], stats["failures_by_task_type"]) == (0, {})
    assert stats["oldest_failure"] is None


async def test_purge_removes_more_than_one_batch(dlq: DeadLetterQueue) -> None:
    for i in range(1203):
        await dlq.push("a" if i % 2 else "b", i, "e")
    assert await dlq.purge(task_type="a") == 601
    assert await dlq.purge() == 602
    assert await dlq.count() == 0


# ---------------------------------------------------------------- caps


async def test_a_full_queue_rejects_loudly_and_stores_nothing(make_dlq: MakeDlq) -> None:
    dlq = make_dlq(max_entries=3)
    ids = [await dlq.push("t", i, "e") for i in range(3)]
    with pytest.raises(DeadLetterQueueFullError, match="max_entries=3"):
        await dlq.push("t", 99, "e")
    assert await dlq.count() == 3
    assert {e.id for e in (await dlq.list()).entries} == set(ids)


async def test_evict_oldest_counts_evictions_and_emits_events(
    make_dlq: MakeDlq, clock: FakeClock
) -> None:
    dlq = make_dlq(max_entries=3, overflow="evict_oldest")
    events: list[object] = []
    dlq.add_listener(events.append)
    ids = await fill(dlq, clock, ["a", "b", "a", "b", "a"])
    assert [e.id for e in (await dlq.list()).entries] == [ids[4], ids[3], ids[2]]
    stats = await dlq.stats()
    assert (stats["evicted"], stats["total_failed_tasks"]) == (2, 3)
    assert stats["failures_by_task_type"] == {"a": 2, "b": 1}
    assert [(e.entry_id, e.queue) for e in events if isinstance(e, DeadLetterEvicted)] == [
        (ids[0], "default"),
        (ids[1], "default"),
    ]


async def test_retention_drops_expired_entries_on_push(make_dlq: MakeDlq, clock: FakeClock) -> None:
    dlq = make_dlq(retention=timedelta(hours=1))
    old = [await dlq.push("t", i, "e") for i in range(3)]
    clock.advance(3600.5)
    fresh = await dlq.push("t", 3, "e")
    assert [e.id for e in (await dlq.list()).entries] == [fresh]
    assert [await dlq.get(i) for i in old] == [None, None, None]
    assert (await dlq.stats())["expired"] == 3


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda q: q.push("t", {1, 2}, "e"), SerializationError, "payload of 't'"),
        (lambda q: q.push("t", float("nan"), "e"), SerializationError, "not serializable"),
        (lambda q: q.push("t", "x" * 2000, "e"), DeadLetterTooLargeError, "max_payload_bytes"),
        (lambda q: q.push("", 1, "e"), ValueError, "task_type must be a non-empty"),
        (lambda q: q.push("  ", 1, "e"), ValueError, "task_type must be a non-empty"),
        (lambda q: q.push(b"t", 1, "e"), TypeError, "task_type must be a str"),
        (lambda q: q.push("t" * 201, 1, "e"), ValueError, "at most 200"),
        (lambda q: q.push("t", 1, 42), TypeError, "error must be an exception or a str"),
        (lambda q: q.push("t", 1, "e", attempts=0), ValueError, "attempts must be"),
        (lambda q: q.push("t", 1, "e", task_id=""), ValueError, "task_id must be"),
        (lambda q: q.push("t", 1, "e", metadata={"x": object()}), SerializationError,
         "metadata of 't'"),
        (lambda q: q.list(since=datetime(2024, 1, 1)), ValueError, "timezone-aware"),
        (lambda q: q.list(cursor="0:{}"), ValueError, "cursor is not one"),
        (lambda q: q.list(limit=0), ValueError, "limit must be"),
        (lambda q: q.purge(older_than=-1), ValueError, "older_than must be"),
        (lambda q: q.claim("x", lease=0), ValueError, "lease must be > 0"),
    ],
)  # fmt: skip
async def test_bad_input_is_a_clear_error_and_stores_nothing(
    make_dlq: MakeDlq, call: Callable[[DeadLetterQueue], Any], error: type, match: str
) -> None:
    dlq = make_dlq(max_payload_bytes=1000)
    with pytest.raises(error, match=match):
        await call(dlq)
    assert await dlq.count() == 0


def test_bad_options_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="overflow must be"):
        DeadLetterQueue(overflow="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_entries"):
        DeadLetterQueue(max_entries=0)
    with pytest.raises(ValueError, match="retention"):
        DeadLetterQueue(retention=0)
    with pytest.raises(ValueError, match="name must not be empty"):
        DeadLetterQueue(name="")
    with pytest.raises(TypeError, match="backend must be"):
        DeadLetterQueue(backend=object())


# ---------------------------------------------------------------- on_failure


async def test_on_failure_pushes_the_call_and_reraises_the_same_exception(
    dlq: DeadLetterQueue,
) -> None:
    error = Boom("smtp down")

    @dlq.on_failure("send_email")
    async def send_email(to: str, *, subject: str) -> str:
        raise error

    with pytest.raises(Boom) as info:
        await send_email("a@example.com", subject="hi")
    assert info.value is error
    [letter] = (await dlq.list()).entries
    assert (letter.task_type, letter.payload) == (
        "send_email",
        {"args": ["a@example.com"], "kwargs": {"subject": "hi"}},
    )
    assert (letter.error_type, letter.error_message) == ("Boom", "smtp down")


async def test_on_failure_uses_a_payload_callable_and_passes_results_through(
    dlq: DeadLetterQueue,
) -> None:
    @dlq.on_failure("job", payload=lambda order, fail: {"order": order["id"]})
    async def job(order: dict[str, Any], fail: bool) -> int:
        if fail:
            raise Boom("x")
        return 7

    assert await job({"id": 1, "blob": object()}, False) == 7
    with pytest.raises(Boom):
        await job({"id": 2, "blob": object()}, True)
    assert [e.payload for e in (await dlq.list()).entries] == [{"order": 2}]


async def test_on_failure_still_raises_the_original_when_the_push_fails(
    dlq: DeadLetterQueue,
) -> None:
    error = Boom("x")

    @dlq.on_failure("job")
    async def job(thing: object) -> None:
        raise error

    with pytest.raises(Boom) as info:
        await job(object())  # not JSON: the push fails, the task's error wins
    assert info.value is error
    assert await dlq.count() == 0


async def test_on_failure_never_dead_letters_cancellation(dlq: DeadLetterQueue) -> None:
    @dlq.on_failure("job")
    async def job() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await job()
    assert await dlq.count() == 0


def test_on_failure_refuses_synchronous_functions() -> None:
    dlq = DeadLetterQueue()
    with pytest.raises(TypeError, match="async functions"):

        @dlq.on_failure("job")
        def job() -> None: ...


# ---------------------------------------------------------------- scale


async def test_push_prepared_stores_in_batches_with_the_cap_per_entry(
    make_dlq: MakeDlq,
) -> None:
    dlq = make_dlq(max_entries=25)
    rows = [dlq.prepare("t", i, "e", task_id=f"task-{i}") for i in range(30)]
    with pytest.raises(DeadLetterQueueFullError, match="25 entries were stored before"):
        await dlq.push_prepared(rows, batch=7)
    page = await dlq.list(limit=100)
    assert [e.payload for e in page.entries] == list(reversed(range(25)))
    assert page.entries[0].task_id == "task-24"
    with pytest.raises(SerializationError):
        dlq.prepare("t", object(), "e")


async def test_push_prepared_weighs_its_chunks_in_bytes_not_characters(
    make_dlq: MakeDlq,
) -> None:
    """A chunk holds at most 1 MiB of fields as Redis receives them: UTF-8 bytes. Metadata
    of 100,000 euro signs is 100,000 characters but 300,000 bytes."""
    dlq = make_dlq()
    note = "\u20ac" * 100_000
    rows = [dlq.prepare("t", i, "e", metadata={"note": note}) for i in range(5)]
    sizes: list[int] = []
    storage = dlq._storage

    class Counting:  # the queue's storage, counting the entries of each chunk
        def __getattr__(self, name: str) -> Any:
            return getattr(storage, name)

        async def push_many(self, chunk: Any, *args: Any) -> Any:
            sizes.append(len(chunk))
            return await storage.push_many(chunk, *args)

    dlq._storage = Counting()  # type: ignore[assignment]
    assert await dlq.push_prepared(rows) == 5
    dlq._storage = storage
    assert sizes == [3, 2]  # 3 x 300,000 bytes fit in 1 MiB, a fourth does not
    page = await dlq.list(limit=10)
    assert [e.metadata for e in page.entries] == [{"note": note}] * 5


@pytest.mark.slow
@pytest.mark.parametrize("dlq_backend", ["memory", "redis"], indirect=True)
async def test_stats_and_purge_on_100k_entries(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    # On Redis, under the default operation_timeout (1 s), on purpose: the load is one call and
    # the purges remove 50,000 entries, and each is a loop of small chunks with a deadline of
    # its own. The load used to be one pipeline of 100,000 scripts under one deadline: it timed
    # out (and marked the backend unavailable); a 500-entry one had flaked on a loaded machine.
    types = ["a", "b", "c", "d"]
    rows = []
    for start in range(0, 100_000, 1000):
        rows += [dlq.prepare(types[i % 4], i, "e") for i in range(start, start + 1000)]
        clock.advance(1)
    assert await dlq.push_prepared(rows, batch=100_000) == 100_000
    stats = await dlq.stats()
    assert stats["total_failed_tasks"] == 100_000
    assert stats["failures_by_task_type"] == dict.fromkeys(types, 25_000)
    assert stats["recent_failures_24h"] == 100_000
    assert await dlq.purge(older_than=50) == 50_000  # the first 50 seconds' pushes
    assert await dlq.purge(task_type="a") == 12_500
    stats = await dlq.stats()
    assert stats["total_failed_tasks"] == 37_500
    assert stats["failures_by_task_type"] == {"b": 12_500, "c": 12_500, "d": 12_500}
    page = await dlq.list(limit=3)
    assert [json.dumps(e.payload) for e in page.entries] == ["99999", "99998", "99997"]


async def test_retry_all_raises_a_failing_progress_callback_instead_of_hanging() -> None:
    import asyncio

    from aioresil import DeadLetterQueue

    dlq = DeadLetterQueue()
    for i in range(50):
        await dlq.push("job", {"i": i}, "boom")

    async def handler(letter: object) -> None:
        return None

    def progress(report: object) -> None:
        raise RuntimeError("progress bar broke")

    async with asyncio.timeout(5):
        with pytest.raises(RuntimeError, match="progress bar broke"):
            await dlq.retry_all(handler, concurrency=2, progress=progress)
    assert await dlq.count() >= 48  # what was not retried is still there
