"""Every way the CLI can fail is one line on stderr, no traceback, a documented exit code.

Exit codes (see :mod:`aioresil.cli`): 2 for usage errors, 1 for everything else. Each case is
a real subprocess, as a user would run it; the partial benchmark run's merge is pinned here
too (``python -m benchmarks bench_x`` must keep the other sections of results.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks._results import merge_results, split_sections

from ..servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, cwd: Path = ROOT, code: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORESIL_")}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "aioresil"]
    return subprocess.run(
        [*argv, *([] if code else args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A redis-server with a password, to get a wrong password refused."""
    import redis

    server = RedisServer(free_port()).start()  # PING answers until the password is set
    with redis.Redis(port=server.port) as client:
        client.config_set("requirepass", "right-password")
    try:
        yield server
    finally:
        server.stop()


WITHOUT_REDIS_PY = (
    "import runpy, sys\n"
    "sys.modules['redis'] = None\n"
    "sys.modules['redis.asyncio'] = None\n"
    "sys.argv = ['aioresil', *sys.argv[1:]]\n"
    "runpy.run_module('aioresil', run_name='__main__', alter_sys=True)\n"
)


def test_redis_commands_without_redis_py_name_the_extra() -> None:
    # What `pip install .` (no extras) gives: redis-py is not importable.
    result = run("--redis", "redis://127.0.0.1:1/0", "breakers", code=WITHOUT_REDIS_PY)
    line = one_line(result, 1)
    assert "pip install 'aioresil[redis]'" in line


@pytest.mark.redis_server
def test_a_wrong_password_is_reported_as_refused_credentials(locked_redis: RedisServer) -> None:
    url = f"redis://:wrong-password@127.0.0.1:{locked_redis.port}/0"
    line = one_line(run("--redis", url, "breakers"), 1)
    assert "refused the credentials" in line
    assert "unreachable" not in line
    assert "wrong-password" not in line


def test_a_malformed_url_keeps_the_whole_message_without_the_password() -> None:
    line = one_line(run("--redis", "redis://:hunter2-secret@127.0.0.1:notaport/0", "breakers"), 2)
    assert "Port could not be cast to integer value as 'notaport'" in line
    assert "hunter2-secret" not in line


def test_a_handler_module_raising_at_import_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_handlers.py").write_text(
        "x = 1\nraise RuntimeError('config file missing')\nasync def ok(letter): pass\n"
    )
    result = run(
        "--redis",
        "redis://127.0.0.1:1/0",
        "dlq",
        "retry",
        "--all",
        "--handler",
        "broken_handlers:ok",
        cwd=tmp_path,
    )
    line = one_line(result, 1)
    assert "handler module 'broken_handlers' raised while importing" in line
    assert "RuntimeError: config file missing" in line
    assert "line 2" in line


def test_demo_json_prints_only_json_on_stdout() -> None:
    result = run("demo", "--calls", "20", "--interval", "0", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)  # all of stdout: nothing else is printed there
    assert body["name"] == "upstream"
    assert "aioresil demo:" in result.stderr  # the narration moved to stderr


@pytest.mark.redis_server
def test_demo_uses_redis_when_given(redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.delete(*client.keys("*upstream*") or ["none"])
        result = run("--redis", redis_url, "demo", "--calls", "20", "--interval", "0")
        assert result.returncode == 0, result.stderr
        assert "state on RedisBackend" in result.stdout
        # the demo's breaker really lived on that Redis (it used to ignore --redis silently)
        assert client.keys("*upstream*"), "the demo left nothing on the Redis it was given"


@pytest.mark.redis_server
@pytest.mark.parametrize("where", ["env", "after", "serve-env", "serve-after"])
def test_demo_honours_the_redis_url_like_every_command(redis_url: str, where: str) -> None:
    # AIORESIL_REDIS_URL is the same as --redis, which may stand before or after the command.
    import redis

    env = {"AIORESIL_REDIS_URL": redis_url} if where.endswith("env") else {}
    after = ["--redis", redis_url] if where.endswith("after") else []
    serve = ["--serve", "--port", "0", "--rounds", "1"] if where.startswith("serve") else []
    with redis.Redis.from_url(redis_url) as client:
        result = run("demo", *after, *serve, "--calls", "12", "--interval", "0", env=env)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "RedisBackend" in result.stdout
        assert client.keys("*upstream*"), "the demo left nothing on the Redis it was given"


def test_help_does_not_say_the_demo_is_memory_only() -> None:
    result = run("--help")
    assert result.returncode == 0
    demo_line = next(line for line in result.stdout.splitlines() if line.strip().startswith("demo"))
    assert "memory backend)" not in demo_line


def test_demo_with_redis_down_is_one_line() -> None:
    line = one_line(run("--redis", f"redis://127.0.0.1:{free_port()}/0", "demo"), 1)
    assert line.startswith("aioresil: error: cannot reach Redis at 127.0.0.1:")


@pytest.mark.redis_server
def test_dlq_stats_shows_a_dash_not_none_and_purge_counts_one_entry(redis_url: str) -> None:
    import asyncio

    from aioresil import DeadLetterQueue, RedisBackend

    empty = run("--redis", redis_url, "dlq", "--dlq", "cli-errors", "stats")
    assert empty.returncode == 0, empty.stderr
    assert "None" not in empty.stdout
    assert "oldest_failure         -" in empty.stdout

    async def push_one() -> None:
        async with RedisBackend.from_url(redis_url, listen=False) as backend:
            await DeadLetterQueue(backend, name="cli-errors").push("t", {}, RuntimeError("x"))

    asyncio.run(push_one())
    stats = run("--redis", redis_url, "dlq", "--dlq", "cli-errors", "stats")
    assert "queue 'cli-errors': 1 entry\n" in stats.stdout
    purged = run(
        "--redis", redis_url, "dlq", "--dlq", "cli-errors", "purge", "--older-than", "0", "--yes"
    )
    assert purged.stdout.strip() == "purged 1 entry older than 0"


def test_a_partial_benchmark_run_keeps_the_other_sections() -> None:
    committed = (ROOT / "benchmarks" / "results.md").read_text(encoding="utf-8")
    _, sections = split_sections(committed)
    heading = sections[1].splitlines()[0]
    merged = merge_results(committed, "# new run", [f"{heading}\n\nnew numbers"], partial=True)
    _, after = split_sections(merged)
    assert [s.splitlines()[0] for s in after] == [s.splitlines()[0] for s in sections]
    assert after[1] == f"{heading}\n\nnew numbers"
    assert after[0] == sections[0] and after[2:] == sections[2:]
    full = merge_results(committed, "# new run", ["## only"], partial=False)
    assert full == "# new run\n\n## only\n"


@pytest.mark.parametrize("example", ["agent.py", "benchmark_run.py", "multi_process.py"])
def test_the_examples_with_redis_down_end_in_one_line(example: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run(str(ROOT / "examples" / example), "--redis", url, code=RUN_FILE)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(example.removesuffix(".py") + ": BackendUnavailableError: ")
    assert "Redis unreachable" in last


def test_benchmark_run_json_prints_only_json_on_stdout() -> None:
    example = str(ROOT / "examples" / "benchmark_run.py")
    result = run(example, "--items", "12", "--latency", "0", "--json", code=RUN_FILE)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["items"] == 12
    assert "starting run" in result.stderr


RUN_FILE = (
    "import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
)
