"""The breaker benchmark still runs (``--smoke``): a subprocess, as ``nox -s bench`` runs it.

Numbers are not checked (never timed assertions in tests); what is pinned is that the run
exits 0, prints the tables with a row for every contender, and that a peer library that is not
installed gets a row saying so instead of crashing the run or vanishing from the table. CI
installs only the ``test`` extra, so there the peers are really missing; here a second run
hides them (``sys.modules[name] = None`` makes their import fail) to pin that path anywhere.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# import name -> distribution name used in the row
PEERS = {
    "circuitbreaker": "circuitbreaker",
    "aiobreaker": "aiobreaker",
    "purgatory": "purgatory",
    "pybreaker": "pybreaker",
    "interlock": "interlock-cb",
}

AIORESIL_ROWS = [
    "aioresil `async with`, default config",
    "aioresil `async with`, failure-rate, count window",
    "aioresil `async with`, failure-rate, time window",
    "aioresil `async with`, slow-call rule",
    "aioresil `@breaker`",
    "aioresil `await breaker.call(noop)`",
    "aioresil `async with` (rejected)",
]

RATIO = re.compile(r"\| (\d+\.\d\d)x \| (\d+\.\d\d)x \|")


def run_smoke(hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    code = (
        "import runpy, sys\n"
        f"sys.modules.update(dict.fromkeys({list(hide)!r}))\n"
        "sys.argv = ['benchmarks', '--smoke', 'bench_breaker']\n"
        "runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def table_rows(out: str) -> dict[str, str]:
    """Every table row, keyed by its first cell."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| contender"):
            rows[line.split(" | ")[0].removeprefix("| ")] = line
    return rows


def row_starting(rows: dict[str, str], prefix: str, *, rejected: bool = False) -> str:
    """The one row whose label starts with ``prefix``, among success or rejection rows."""
    matches = [
        line
        for label, line in rows.items()
        if label.startswith(prefix) and label.endswith("(rejected)") == rejected
    ]
    assert len(matches) == 1, f"expected one row starting {prefix!r}, got {matches}"
    return matches[0]


@pytest.fixture(scope="module")
def smoke_output() -> str:
    results = ROOT / "benchmarks" / "results.md"
    before = results.stat().st_mtime if results.exists() else None
    result = run_smoke()
    assert result.returncode == 0, result.stderr
    after = results.stat().st_mtime if results.exists() else None
    assert before == after, "a smoke run must not write benchmarks/results.md"
    return result.stdout


def test_smoke_run_prints_both_tables_with_the_floor_and_its_time(smoke_output: str) -> None:
    assert "| contender | sequential | 100 tasks |" in smoke_output
    assert smoke_output.count("| contender |") == 2  # successful calls, open circuit
    floor = row_starting(table_rows(smoke_output), "bare `async with`")
    assert "| 1.00x | 1.00x |" in floor
    assert re.search(r"Floor: \d+\.\d+ µs per call sequential", smoke_output)


def test_smoke_run_times_every_aioresil_row(smoke_output: str) -> None:
    rows = table_rows(smoke_output)
    for prefix in AIORESIL_ROWS:
        rejected = prefix.endswith("(rejected)")
        assert RATIO.search(row_starting(rows, prefix, rejected=rejected)), prefix


def test_each_peer_row_has_ratios_when_installed_or_says_not_installed(smoke_output: str) -> None:
    rows = table_rows(smoke_output)
    for module, dist in PEERS.items():
        for line in (row_starting(rows, dist), row_starting(rows, dist, rejected=True)):
            if importlib.util.find_spec(module) is None:
                assert line.endswith("| not installed |"), line
            else:
                assert RATIO.search(line), line


def test_missing_peers_get_not_installed_rows_and_the_run_still_succeeds() -> None:
    result = run_smoke(hide=tuple(PEERS))
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    for dist in PEERS.values():
        assert rows[dist].endswith("| not installed |"), rows[dist]
        assert rows[f"{dist} (rejected)"].endswith("| not installed |")
    for prefix in AIORESIL_ROWS:  # aioresil's rows do not depend on any peer
        rejected = prefix.endswith("(rejected)")
        assert RATIO.search(row_starting(rows, prefix, rejected=rejected)), prefix


def test_running_one_benchmark_rewrites_only_its_section(tmp_path: Path) -> None:
    """Issue 16: ``python -m benchmarks bench_checkpoint`` overwrote the committed results.md
    with that one section. The real entry point runs on a copy of the package whose
    ``bench_checkpoint`` is a quick stand-in returning a section under the committed heading."""
    import shutil

    copy = tmp_path / "benchmarks"
    shutil.copytree(ROOT / "benchmarks", copy, ignore=shutil.ignore_patterns("__pycache__"))
    committed = (copy / "results.md").read_text(encoding="utf-8")
    sections = [s for s in re.split(r"(?m)^(?=## )", committed) if s.startswith("## ")]
    [heading] = [s.splitlines()[0] for s in sections if "bench_checkpoint" in s.splitlines()[0]]
    (copy / "bench_checkpoint.py").write_text(
        f"async def main(smoke: bool) -> str:\n    return {heading + chr(10) * 2 + 'new'!r}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "bench_checkpoint"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = (copy / "results.md").read_text(encoding="utf-8")
    after = [s for s in re.split(r"(?m)^(?=## )", written) if s.startswith("## ")]
    assert [s.splitlines()[0] for s in after] == [s.splitlines()[0] for s in sections]
    for old, new in zip(sections, after, strict=True):
        if old.startswith(heading):
            assert new.strip() == f"{heading}\n\nnew"
        else:
            assert new.strip() == old.strip()
