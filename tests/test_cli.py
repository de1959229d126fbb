"""The command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioresil", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_demo_prints_each_state_change_and_final_stats() -> None:
    result = run("demo", "--calls", "60", "--interval", "0.01", "--json")
    assert result.returncode == 0, result.stderr
    narration = result.stderr  # --json: stdout holds only the JSON
    assert "closed -> open" in narration
    assert "open -> half_open" in narration
    assert "half_open -> closed" in narration
    stats = json.loads(result.stdout)
    assert stats["name"] == "upstream"
    assert stats["state"] == "closed"
    assert stats["rejected_calls"] > 0
    assert stats["total_calls"] + stats["rejected_calls"] == 60


def test_demo_rejects_bad_arguments_without_a_traceback() -> None:
    result = run("demo", "--calls", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--calls" in result.stderr


def test_no_command_prints_help_and_fails() -> None:
    result = run()
    assert result.returncode == 2
    assert "demo" in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("aioresil ")
