"""``-m "not redis_server"`` runs without a redis-server, as the marker promises.

Issue 12: the ``redis`` backend parameter was not marked, so ``-m "not redis_server"`` still
started Redis (and failed where there is none). Here a real pytest run, with no redis-server on
its PATH and ``AIORESIL_REQUIRE_REDIS=1`` (a missing server is a failure, never a skip), runs
files that hold both kinds of tests: the run passes only if every test that needs the server
was deselected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FILES = [
    "tests/face/test_breaker.py",  # the backend_kind parameter: memory, fakeredis, redis
    "tests/backends/test_text.py",  # the redis_url fixture, and tests without a server
]


def test_not_redis_server_runs_every_other_test_without_a_server(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": str(tmp_path),  # no redis-server to be found
        "AIORESIL_REQUIRE_REDIS": "1",
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"]
    selection = [
        "-m",
        "not redis_server",
        "-k",
        "test_reaching_threshold_opens_circuit or test_text",
    ]
    done = subprocess.run(
        [*command, *selection, *FILES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in summary and "deselected" in summary, summary
    assert "skipped" not in summary and "failed" not in summary, summary
