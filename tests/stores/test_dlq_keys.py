"""Every key a DLQ script touches is in its KEYS (issue 12, item 3), watched with ``MONITOR``.

The queue's own keys (index, counters, leases, tokens, sequence) and the entry a call names
are always passed in KEYS. The only keys a script may build itself are per-entry keys (``e:``
entries, ``t:`` type indexes) of entries it finds inside an index (a page, an eviction, a
retention drop, a purge, the entry's own type index): the caller cannot name them without a
second round trip, and they are built from KEYS[1]'s name, so they share its hash tag.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aioresil import DeadLetterQueue, RedisBackend

from ..monitor import Monitor

pytestmark = pytest.mark.redis_server

NO_KEY = {"TIME"}


@pytest.fixture
def watched(redis_url: str) -> Iterator[Monitor]:
    monitor = Monitor(redis_url)
    try:
        yield monitor
    finally:
        monitor.close()


def script_calls(commands: list[dict[str, Any]]) -> list[tuple[list[str], list[list[str]]]]:
    """``(KEYS, [command args the script ran, ...])`` per EVALSHA, in order."""
    calls: list[tuple[list[str], list[list[str]]]] = []
    for command in commands:
        words = str(command["command"]).split(" ")
        if command.get("client_type") == "lua":
            if calls:
                calls[-1][1].append(words)
        elif words[0].upper() == "EVALSHA":
            numkeys = int(words[2])
            calls.append((words[3 : 3 + numkeys], []))
    return calls


async def run_watched(watched: Monitor, action: Any) -> list[tuple[list[str], list[list[str]]]]:
    return script_calls(await watched.during(action))


def touched_outside_keys(
    calls: list[tuple[list[str], list[list[str]]]], base: str
) -> tuple[set[str], set[str]]:
    """``(queue-level keys missing from KEYS, per-entry keys built by the script)``."""
    missing: set[str] = set()
    built: set[str] = set()
    for keys, ran in calls:
        assert keys and keys[0] == base + "idx", keys  # KEYS[1] is the queue's index
        for words in ran:
            if words[0].upper() in NO_KEY or len(words) < 2:
                continue
            key = words[1]
            if key in keys:
                continue
            rest = key[len(base) :] if key.startswith(base) else key
            if key.startswith(base) and rest.startswith(("e:", "t:")):
                built.add(key)
            else:
                missing.add(key)
    return missing, built


async def test_single_entry_operations_pass_every_key(redis_url: str, watched: Monitor) -> None:
    async with RedisBackend.from_url(redis_url, listen=False) as backend:
        dlq = DeadLetterQueue(backend, name="keys")
        base = backend.key("dlq", "keys", "")
        await dlq.push("warm", 0, "e")  # scripts loaded before watching

        ids: list[str] = []

        async def push() -> None:
            ids.append(await dlq.push("mail", {"to": "x"}, ValueError("down"), task_id="t1"))

        calls = await run_watched(watched, push)
        assert [len(ran) > 0 for _, ran in calls] == [True]
        assert touched_outside_keys(calls, base) == (set(), set())

        for action in (
            lambda: dlq.stats(),
            lambda: dlq.claim(ids[0], lease=30),
        ):
            calls = await run_watched(watched, action)
            assert calls, "the operation ran a script"
            assert touched_outside_keys(calls, base) == (set(), set())


async def test_settling_a_lease_builds_only_the_entry_type_index(
    redis_url: str, watched: Monitor
) -> None:
    async with RedisBackend.from_url(redis_url, listen=False) as backend:
        dlq = DeadLetterQueue(backend, name="keys")
        base = backend.key("dlq", "keys", "")
        first = await dlq.push("mail", 1, "e")
        second = await dlq.push("mail", 2, "e")
        third = await dlq.push("sms", 3, "e")
        one = await dlq.claim(first)
        two = await dlq.claim(second)

        for action in (
            lambda: dlq.nack(one, "again"),
            lambda: dlq.ack(two),
            lambda: dlq.remove(third),
        ):
            calls = await run_watched(watched, action)
            missing, built = touched_outside_keys(calls, base)
            assert missing == set()
            assert built <= {base + "t:mail", base + "t:sms"}, built


async def test_scripts_that_walk_an_index_build_only_entry_keys(
    redis_url: str, watched: Monitor
) -> None:
    async with RedisBackend.from_url(redis_url, listen=False) as backend:
        dlq = DeadLetterQueue(backend, name="keys", max_entries=3, overflow="evict_oldest")
        base = backend.key("dlq", "keys", "")
        for i in range(3):
            await dlq.push("mail", i, "e")

        async def evicting_push() -> None:
            await dlq.push("mail", 9, "e")

        for action in (evicting_push, lambda: dlq.list(limit=10), lambda: dlq.purge()):
            calls = await run_watched(watched, action)
            missing, built = touched_outside_keys(calls, base)
            assert missing == set()
            assert built, "these scripts find entries in an index"
        assert await dlq.count() == 0


async def test_a_bulk_load_passes_every_key_of_its_chunk(redis_url: str, watched: Monitor) -> None:
    # push_prepared stores a chunk per script: each entry's hash and type index are in KEYS.
    async with RedisBackend.from_url(redis_url, listen=False) as backend:
        dlq = DeadLetterQueue(backend, name="keys")
        base = backend.key("dlq", "keys", "")
        assert await dlq.push_prepared([dlq.prepare("warm", 0, "e")]) == 1  # script loaded
        rows = [dlq.prepare(("mail", "sms")[i % 2], i, "e") for i in range(450)]

        async def load() -> None:
            assert await dlq.push_prepared(rows) == 450

        calls = await run_watched(watched, load)
        assert [len(keys) for keys, _ in calls] == [7 + 2 * 200, 7 + 2 * 200, 7 + 2 * 50]
        assert touched_outside_keys(calls, base) == (set(), set())
        assert await dlq.count() == 451
