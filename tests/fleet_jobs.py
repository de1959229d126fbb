"""Run ``tests/workers/fleet_feature_worker.py`` jobs as separate processes (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "fleet_feature_worker.py"


def start(spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, Any]:
    """The job's JSON answer; kills the process (by PID) if it does not end in time."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"fleet job {process.pid} did not finish") from None
    assert process.returncode == 0, err[-3000:]
    answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return answer


async def run_all(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start every job at once and wait for all answers."""
    processes = [start(spec) for spec in specs]
    return list(await asyncio.gather(*(asyncio.to_thread(finish, p) for p in processes)))
