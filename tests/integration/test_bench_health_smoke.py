"""The health benchmark still runs (``--smoke``) and times every endpoint against its floor.

Numbers are not checked (never timed assertions); what is pinned is that the run exits 0
without writing results, and that each endpoint has a row on both backends with a ratio.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.redis_server


def test_smoke_run_has_a_row_per_endpoint_and_backend() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "bench_health"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| memory", "| Redis"))]
    for backend in ("memory", "Redis"):
        mine = [row for row in rows if row.startswith(f"| {backend} ")]
        for endpoint in (
            "/health",
            "/health/ready",
            "/health/circuit-breakers",
            "/health/dlq",
            "/metrics",
        ):
            assert any(f"| `{endpoint}` |" in row for row in mine), (backend, endpoint)
        assert any("cache_ttl=1" in row for row in mine)
        for row in mine:
            assert re.search(r"\| \d+x \| \d+\.\d{3} \|$", row), row
