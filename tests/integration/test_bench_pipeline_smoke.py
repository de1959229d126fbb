"""The pipeline benchmark still runs (``--smoke``), with and without its bench-only peers.

Numbers are not checked (never timed assertions in tests). Pinned: the run exits 0, every row
is printed, and a missing tenacity or stamina (CI installs only the ``test`` extra) gets a
"not installed" row instead of crashing the run.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

OUR_ROWS = [
    "bare `await trivial()` (floor)",
    "`Timeout(60).call`",
    "`Retry(3).call`",
    "`Bulkhead(100).call`",
    "`CircuitBreaker.call`",
    "4-policy pipeline: Timeout, Retry, breaker, Bulkhead",
    "hand-written `try`/`except` + second call (floor)",
    "aioresil `Retry(3).call`",
]


def run_smoke(hide: tuple[str, ...] = ()) -> str:
    code = (
        "import runpy, sys\n"
        f"sys.modules.update(dict.fromkeys({list(hide)!r}))\n"
        "sys.argv = ['benchmarks', '--smoke', 'bench_pipeline']\n"
        "runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(out: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| call"):
            label, *cells = [cell.strip() for cell in line.strip("|").split("|")]
            table.setdefault(label, cells)
    return table


def test_smoke_run_prints_every_row_with_a_ratio() -> None:
    table = rows(run_smoke())
    for label in OUR_ROWS:
        assert table[label][1].endswith("x"), (label, table[label])


@pytest.mark.parametrize("peer", ["tenacity", "stamina"])
def test_a_missing_peer_gets_a_not_installed_row(peer: str) -> None:
    table = rows(run_smoke(hide=(peer,)))
    assert table[f"{peer} `@retry`"] == ["not installed", "-"]
    for label in OUR_ROWS:
        assert table[label][1].endswith("x")


@pytest.mark.skipif(
    importlib.util.find_spec("tenacity") is None or importlib.util.find_spec("stamina") is None,
    reason="tenacity/stamina are bench-only dependencies",
)
def test_installed_peers_are_measured() -> None:
    out = run_smoke()
    measured = [line for line in out.splitlines() if line.startswith(("| tenacity ", "| stamina "))]
    assert len(measured) == 4  # both peers, in both tables
    assert all(line.rstrip(" |").endswith("x") for line in measured)
