"""The Redis commands of the CLI, run as real subprocesses against the fixture's redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aioresil import BreakerConfig, BreakerRegistry, CircuitState, DeadLetterQueue
from aioresil.testing import FakeClock

from ..helpers import eventually
from ..servers import free_port

pytestmark = pytest.mark.redis_server

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400.0
HANDLERS = """
from pathlib import Path

async def ok(letter):
    with open(Path(__file__).with_name("done.txt"), "a") as out:
        out.write(letter.id + "\\n")

async def fails(letter):
    raise RuntimeError("still broken")

def not_async(letter):
    return None
"""


def run(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    base = dict(os.environ)
    base.pop("AIORESIL_REDIS_URL", None)  # only what the test passes
    full_env = {**base, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "aioresil", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=full_env,
        input=stdin if stdin is not None else "",
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture
async def seeded(redis_url: str) -> AsyncIterator[dict[str, Any]]:
    """Three breakers (``payments`` open), and a queue with two 10-day-old and two new entries."""
    from aioresil import RedisBackend

    async with RedisBackend.from_url(redis_url, listen=False) as backend:
        registry = BreakerRegistry(
            backend=backend, default_config=BreakerConfig(failure_threshold=1)
        )
        for name in ("search", "a/b c"):
            async with registry.get(name):
                pass
        with pytest.raises(RuntimeError):
            async with registry.get("payments"):
                raise RuntimeError("down")
        old_clock = FakeClock(wall_start=time.time() - 10 * DAY)
        old = DeadLetterQueue(backend, clock=old_clock)
        old_ids = [await old.push("email", {"n": i}, RuntimeError("smtp")) for i in range(2)]
        new = DeadLetterQueue(backend)
        new_ids = [await new.push("sms", {"n": i}, "gateway 502") for i in range(2)]
        yield {
            "backend": backend,
            "registry": registry,
            "old": old_ids,
            "new": new_ids,
            "dlq": new,
        }


# ---------------------------------------------------------------------- breakers


async def test_breakers_table_lists_every_breaker_with_its_state(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    result = run("--redis", redis_url, "breakers")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "STATE"]
    rows = {line.split("  ")[0].strip(): line for line in lines[1:]}
    assert set(rows) == {"a/b c", "payments", "search"}
    assert " open " in rows["payments"]
    assert " closed " in rows["search"]


async def test_breakers_json_and_options_after_the_command(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    result = run("breakers", "--json", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert sorted(body) == ["a/b c", "payments", "search"]
    assert body["payments"]["state"] == "open"
    assert 0 < body["payments"]["retry_after"] <= 30
    assert body["payments"]["failure_count"] == 1
    assert body["payments"]["lifetime_failure_rate"] == 1.0
    assert body["search"]["lifetime_failure_rate"] == 0.0


async def test_the_environment_variable_and_prefix_choose_what_is_listed(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    env = {"AIORESIL_REDIS_URL": redis_url}
    same = run("breakers", "--json", env=env)
    other = run("--prefix", "other-app", "breakers", "--json", env=env)
    assert sorted(json.loads(same.stdout)) == ["a/b c", "payments", "search"]
    assert json.loads(other.stdout) == {}


async def test_breakers_reset_and_open_change_the_shared_state(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    reset = run("--redis", redis_url, "breakers", "reset", "payments")
    opened = run("--redis", redis_url, "breakers", "open", "a/b c")
    assert (reset.returncode, reset.stdout.strip()) == (0, "breaker 'payments' is now closed")
    assert opened.returncode == 0
    registry = seeded["registry"]
    stats = await registry.get("payments").stats()
    assert stats.state is CircuitState.CLOSED
    assert stats.failure_count == 0
    assert (await registry.get("a/b c").stats()).state is CircuitState.FORCED_OPEN


async def test_an_unknown_breaker_is_one_line_and_nothing_is_created(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    result = run("--redis", redis_url, "breakers", "reset", "nope")
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "aioresil: error: no breaker named 'nope' under prefix 'aioresil'"
    )
    backend = seeded["backend"]
    assert not await backend.client.exists(backend.key("cb", "nope", "state"))


# ---------------------------------------------------------------------- dlq reads


async def test_dlq_stats_and_list(redis_url: str, seeded: dict[str, Any]) -> None:
    stats = json.loads(run("--redis", redis_url, "dlq", "stats", "--json").stdout)
    assert stats["total_failed_tasks"] == 4
    assert stats["failures_by_task_type"] == {"email": 2, "sms": 2}
    human = run("--redis", redis_url, "dlq", "stats")
    assert "queue 'default': 4 entries" in human.stdout
    listed = json.loads(
        run("--redis", redis_url, "dlq", "list", "--type", "email", "--limit", "1", "--json").stdout
    )
    assert [e["id"] for e in listed["entries"]] == [seeded["old"][1]]
    assert listed["more"] is True
    assert "payload" not in listed["entries"][0]
    table = run("--redis", redis_url, "dlq", "list")
    assert table.stdout.splitlines()[0].split()[:2] == ["ID", "TYPE"]
    assert all(entry in table.stdout for entry in seeded["old"] + seeded["new"])


async def test_dlq_list_pages_past_any_limit_with_the_cursor(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    # Every entry is reachable from the CLI, page by page: --json gives next_cursor, the
    # table prints the command of the next page, --cursor takes either.
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        args = ["--redis", redis_url, "dlq", "list", "--limit", "3", "--json"]
        page = json.loads(run(*args, *(["--cursor", cursor] if cursor else [])).stdout)
        seen += [e["id"] for e in page["entries"]]
        assert page["more"] is (page["next_cursor"] is not None)
        cursor = page["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert pages == 2
    assert sorted(seen) == sorted(seeded["old"] + seeded["new"])  # each once, none lost
    assert len(seen) == len(set(seen))

    table = run(
        "--redis", redis_url, "dlq", "--dlq", "default", "list", "--type", "email", "--limit", "1"
    )
    hint = table.stdout.splitlines()[-1]
    assert hint.startswith(
        "next page: aioresil dlq --dlq default list --type email --limit 1 --cursor "
    )
    following = hint.removeprefix("next page: aioresil ").split()
    rest = run("--redis", redis_url, *[part.strip("'") for part in following])
    assert rest.returncode == 0, rest.stderr
    assert seeded["old"][0] in rest.stdout and seeded["old"][1] not in rest.stdout
    assert "next page" not in rest.stdout  # the last page

    bad = run("--redis", redis_url, "dlq", "list", "--cursor", "nonsense")
    assert bad.returncode == 2
    assert "--cursor must be a next_cursor" in bad.stderr


async def test_dlq_queues_lists_the_queues_holding_entries(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    # A mistyped --dlq looks like an empty queue; `dlq queues` shows the names that exist.
    backend = seeded["backend"]
    orders = DeadLetterQueue(backend, name="orders {eu}")
    await orders.push("ship", {}, RuntimeError("x"))
    gone = DeadLetterQueue(backend, name="emptied")
    entry = await gone.push("ship", {}, RuntimeError("x"))
    assert await gone.remove(entry)
    listed = json.loads(run("--redis", redis_url, "dlq", "queues", "--json").stdout)
    assert listed == {"default": 4, "orders {eu}": 1}
    table = run("--redis", redis_url, "dlq", "queues").stdout.splitlines()
    assert table[0].split() == ["QUEUE", "ENTRIES"]
    assert [line.split("  ")[0] for line in table[1:]] == ["default", "orders {eu}"]
    typo = run("--redis", redis_url, "dlq", "--dlq", "nosuchqueue", "stats")
    assert "queue 'nosuchqueue': 0 entries" in typo.stdout
    assert "aioresil dlq queues" in typo.stdout
    real = run("--redis", redis_url, "dlq", "stats")
    assert "dlq queues" not in real.stdout


async def test_dlq_show_prints_one_entry_in_full(redis_url: str, seeded: dict[str, Any]) -> None:
    entry = seeded["old"][0]
    body = json.loads(run("--redis", redis_url, "dlq", "show", entry, "--json").stdout)
    assert body["id"] == entry
    assert body["payload"] == {"n": 0}
    assert body["error_type"] == "RuntimeError"
    human = run("--redis", redis_url, "dlq", "show", entry)
    assert f"id               {entry}" in human.stdout


async def test_an_unknown_entry_and_another_queue_name(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    missing = run("--redis", redis_url, "dlq", "show", "0123456789ab-0123456789abcdef")
    assert missing.returncode == 1
    assert "no dead letter '0123456789ab-0123456789abcdef' in queue 'default'" in missing.stderr
    other = json.loads(
        run("--redis", redis_url, "dlq", "--dlq", "orders", "stats", "--json").stdout
    )
    assert other["total_failed_tasks"] == 0
    also = json.loads(run("--redis", redis_url, "dlq", "stats", "--dlq", "orders", "--json").stdout)
    assert also == other


# ---------------------------------------------------------------------- dlq retry


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    (tmp_path / "redrive.py").write_text(HANDLERS)
    return tmp_path


async def test_retry_one_runs_the_handler_and_removes_the_entry(
    redis_url: str, seeded: dict[str, Any], handlers: Path
) -> None:
    entry = seeded["new"][0]
    result = run(
        "--redis", redis_url, "dlq", "retry", entry, "--handler", "redrive:ok", cwd=handlers
    )
    assert result.returncode == 0, result.stderr
    assert (handlers / "done.txt").read_text().split() == [entry]
    assert await seeded["dlq"].get(entry) is None


async def test_a_failing_retry_keeps_the_entry_with_one_more_attempt(
    redis_url: str, seeded: dict[str, Any], handlers: Path
) -> None:
    entry = seeded["new"][0]
    result = run(
        "--redis", redis_url, "dlq", "retry", entry, "--handler", "redrive:fails", cwd=handlers
    )
    assert result.returncode == 1
    assert "failed again" in result.stderr
    letter = await seeded["dlq"].get(entry)
    assert letter is not None
    assert (letter.attempts, letter.error_message) == (2, "still broken")


async def test_retry_explains_what_it_needs(
    redis_url: str, seeded: dict[str, Any], handlers: Path
) -> None:
    entry = seeded["new"][0]
    cases = {
        ("retry", entry): "needs --handler module:function",
        ("retry", "--handler", "redrive:ok"): "needs an entry ID or --all",
        ("retry", entry, "--handler", "redrive"): "must look like module:function",
        ("retry", entry, "--handler", "nowhere:ok"): "cannot import handler module 'nowhere'",
        ("retry", entry, "--handler", "redrive:missing"): "has no attribute 'missing'",
        ("retry", entry, "--handler", "redrive:not_async"): "must be an async function",
    }
    for args, message in cases.items():
        result = run("--redis", redis_url, "dlq", *args, cwd=handlers)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert await seeded["dlq"].count() == 4


async def test_retry_all_asks_first_then_shows_progress(
    redis_url: str, seeded: dict[str, Any], handlers: Path
) -> None:
    args = ("--redis", redis_url, "dlq", "retry", "--all", "--type", "sms")
    refused = run(*args, "--handler", "redrive:ok", cwd=handlers, stdin="n\n")
    assert refused.returncode == 1
    assert "Retry 2 entries of type 'sms'" in refused.stderr
    assert "aborted" in refused.stderr
    assert await seeded["dlq"].count() == 4
    accepted = run(*args, "--handler", "redrive:ok", cwd=handlers, stdin="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "retrying [" in accepted.stderr
    assert "] 2/2" in accepted.stderr
    assert accepted.stdout.strip() == "succeeded 2, failed 0, skipped 0"
    assert sorted((handlers / "done.txt").read_text().split()) == sorted(seeded["new"])
    assert await seeded["dlq"].count() == 2


# ---------------------------------------------------------------------- dlq purge


async def test_purge_removes_only_older_entries_after_confirmation(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    args = ("--redis", redis_url, "dlq", "purge", "--older-than", "7d")
    refused = run(*args)  # empty stdin: no answer is a no
    assert refused.returncode == 1
    assert await seeded["dlq"].count() == 4
    done = run(*args, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purged 2 entries older than 7d"
    assert "purging [" in done.stderr
    remaining = (await seeded["dlq"].list()).entries
    assert sorted(letter.id for letter in remaining) == sorted(seeded["new"])


async def test_purge_by_type_and_bad_durations(redis_url: str, seeded: dict[str, Any]) -> None:
    by_type = run(
        "--redis", redis_url, "dlq", "purge", "--older-than", "0", "--type", "sms", "--yes"
    )
    assert by_type.stdout.strip() == "purged 2 entries of type 'sms' older than 0"
    assert await seeded["dlq"].count() == 2
    for bad in ("7x", "soon", "-1d"):
        result = run("--redis", redis_url, "dlq", "purge", f"--older-than={bad}", "--yes")
        assert result.returncode == 2, bad
        assert "not a duration" in result.stderr
    assert await seeded["dlq"].count() == 2


# ---------------------------------------------------------------------- errors


def test_without_redis_it_says_what_it_needs() -> None:
    result = run("dlq", "stats")
    assert result.returncode == 2
    assert "needs Redis: pass --redis" in result.stderr
    assert "AIORESIL_REDIS_URL" in result.stderr


def test_a_bad_url_and_a_down_server_are_one_line_without_the_password() -> None:
    bad = run("--redis", "http://user:hunter2-secret@127.0.0.1/0", "breakers")
    assert bad.returncode == 2
    assert "--redis must be a redis://" in bad.stderr
    port = free_port()
    down = run("--redis", f"redis://user:hunter2-secret@127.0.0.1:{port}/0", "breakers")
    assert down.returncode == 1
    assert down.stderr.strip().startswith(
        f"aioresil: error: cannot reach Redis at 127.0.0.1:{port}"
    )
    for result in (bad, down):
        assert "hunter2" not in result.stderr + result.stdout
        assert len(result.stderr.strip().splitlines()) == 1


def test_dlq_without_an_action_is_a_usage_error(redis_url: str) -> None:
    result = run("--redis", redis_url, "dlq")
    assert result.returncode == 2
    assert "dlq needs an action" in result.stderr


# ---------------------------------------------------------------------- serve


def test_serve_without_uvicorn_names_the_extra(redis_url: str) -> None:
    code = (
        "import runpy, sys\n"
        "sys.modules['uvicorn'] = None\n"
        f"sys.argv = ['aioresil', '--redis', {redis_url!r}, 'serve']\n"
        "runpy.run_module('aioresil', run_name='__main__', alter_sys=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 1
    assert "pip install 'aioresil[server]'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_reports_redis_breakers_and_admin_works_with_the_token(
    redis_url: str, seeded: dict[str, Any]
) -> None:
    port = free_port()
    token = "serve-test-token-0123456789"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIORESIL_ADMIN_TOKEN": token}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioresil",
        "--redis",
        redis_url,
        "serve",
        "--port",
        str(port),
        "--discover-every",
        "0",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            live: httpx.Response | None = None

            async def answering() -> bool:  # polling a real server's start-up
                nonlocal live
                try:
                    live = await client.get("/health")
                except httpx.TransportError:
                    assert process.returncode is None, "serve exited early"
                    return False
                return True

            await eventually(answering, within=20, interval=0.05, what="serve starting")
            assert live is not None
            breakers = await client.get("/health/circuit-breakers")
            async with seeded["registry"].get("started-later"):
                pass
            rediscovered = await client.get("/health/circuit-breakers")
            dlq = await client.get("/health/dlq")
            metrics = await client.get("/metrics")
            refused = await client.post("/admin/breakers/payments/reset")
            reset = await client.post(
                "/admin/breakers/payments/reset", headers={"Authorization": f"Bearer {token}"}
            )
    finally:
        process.send_signal(signal.SIGINT)
        raw_out, raw_err = await asyncio.wait_for(process.communicate(), 20)
    out, err = raw_out.decode(), raw_err.decode()
    assert live.status_code == 200
    body = breakers.json()
    assert sorted(body["circuit_breakers"]) == ["a/b c", "payments", "search"]
    assert body["status"] == "degraded"
    assert "started-later" in rediscovered.json()["circuit_breakers"]
    assert dlq.json()["statistics"]["total_failed_tasks"] == 4
    assert 'aioresil_circuitbreaker_state{name="payments",state="open"} 1' in metrics.text
    assert refused.status_code == 401
    assert (reset.json()["name"], reset.json()["state"]) == ("payments", "closed")
    assert f"http://127.0.0.1:{port}/health" in out
    assert "Traceback" not in err
    assert process.returncode == 130  # Ctrl-C: uvicorn shut down cleanly, the shell's code
