"""The Redis breaker benchmark still runs (``--smoke``), as ``nox -s bench`` runs it.

Throughput numbers are never checked (no timed assertions). What is pinned: the run exits 0
without writing ``benchmarks/results.md``, every contender has a row (a missing peer says
"not installed"), and the round-trip counts, which are not timings but behaviour read from
``MONITOR``: aioresil strict sends exactly one command per successful call and none per
rejected call while OPEN; batched and the memory backend none per rejection.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"\d+\.\d\dx")


@pytest.fixture(scope="module")
def rows() -> dict[str, list[str]]:
    results = ROOT / "benchmarks" / "results.md"
    before = results.stat().st_mtime if results.exists() else None
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "bench_redis_breaker"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert before == (results.stat().st_mtime if results.exists() else None)
    table: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("| ") and not line.startswith(("| contender", "| measured")):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            table[cells[0]] = cells[1:]
    return table


def row(rows: dict[str, list[str]], prefix: str) -> list[str]:
    matches = [cells for label, cells in rows.items() if label.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(rows))
    return matches[0]


def test_every_contender_has_a_row_with_ratios_against_the_floor(
    rows: dict[str, list[str]],
) -> None:
    floor = row(rows, "raw `EVALSHA` (`return 1`)")
    assert floor[2:4] == ["1.00x", "1.00x"]
    for prefix in ("aioresil strict", "aioresil batched", "aioresil memory backend"):
        assert all(RATIO.fullmatch(cell) for cell in row(rows, prefix)[2:6]), prefix
    for module, prefix in (("pybreaker", "pybreaker"), ("purgatory", "purgatory")):
        cells = row(rows, prefix)
        if importlib.util.find_spec(module) is None:
            assert cells[-1] == "not installed"
        else:
            assert all(RATIO.fullmatch(cell) for cell in cells[2:6]), prefix


def test_strict_costs_one_round_trip_per_success_and_none_per_rejection(
    rows: dict[str, list[str]],
) -> None:
    strict = row(rows, "aioresil strict")
    assert strict[6].startswith("1.00 ("), strict
    assert strict[7] == "0.00 (0.0)", strict
    assert row(rows, "aioresil batched")[7] == "0.00 (0.0)"
    assert row(rows, "aioresil memory backend")[6:8] == ["0.00 (0.0)", "0.00 (0.0)"]


def test_propagation_is_reported_for_every_trip(rows: dict[str, list[str]]) -> None:
    sent = row(rows, "failure record sent")
    assert re.fullmatch(r"-?\d+\.\d\d ms", sent[0])
    assert sent[2] == "2"  # smoke: two trips
