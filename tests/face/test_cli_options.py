"""Bad option values are usage errors found while parsing: exit 2, one line naming the option.

Each case points the command at a Redis that is not there (port 1): had the value been checked
after connecting, the line would say "cannot reach Redis" with exit 1 instead. The three
cases a user reported run as real subprocesses; the table runs ``main()`` in process (the
same code, without an interpreter start per case).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioresil.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOWN = ["--redis", "redis://127.0.0.1:1/0"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, err


def one_line(code: int, err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert code == 2, (code, err)
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["dlq", "--dlq", "", "stats"], "--dlq must not be empty (a queue name)"),
        (["dlq", "stats", "--dlq", ""], "--dlq must not be empty (a queue name)"),
        (["dlq", "list", "--type", ""], "--type must be a non-empty string, got ''"),
        (["dlq", "list", "--type", "x" * 201], "--type is 201 characters, at most 200"),
        (["dlq", "list", "--limit", "0"], "--limit must be an integer in 1..1000, got 0"),
        (["dlq", "list", "--limit", "ten"], "--limit must be an integer in 1..1000, got 'ten'"),
        (["dlq", "purge", "--older-than", "1d", "--type", " "], "--type must be a non-empty"),
        (["dlq", "purge", "--older-than", "soon"], "--older-than: not a duration: 'soon'"),
        (["dlq", "retry", "--all", "--type", ""], "--type must be a non-empty string"),
        (["dlq", "retry", "--all", "--concurrency", "0"], "--concurrency must be an integer >= 1"),
        (["dlq", "worker", "--concurrency", "0"], "--concurrency must be an integer >= 1"),
        (["dlq", "worker", "--lease", "inf"], "--lease must be a number of seconds > 0"),
        (["dlq", "worker", "--poll", "nan"], "--poll must be a number of seconds > 0"),
        (["breakers", "reset", ""], "NAME must not be empty (a breaker name)"),
        (["demo", "--interval", "nan"], "--interval must be a number of seconds >= 0"),
        (["demo", "--interval", "inf"], "--interval must be a number of seconds >= 0"),
        (["demo", "--interval", "-1"], "--interval must be a number of seconds >= 0"),
        (["demo", "--calls", "0"], "--calls must be an integer >= 1, got 0"),
        (["demo", "--seed", "x"], "--seed must be an integer >= 0, got 'x'"),
        (["demo", "--serve", "--rounds", "0"], "--rounds must be an integer >= 1, got 0"),
        (["demo", "--serve", "--port", "-1"], "--port must be an integer in 0..65535, got -1"),
        (["serve", "--dlq", ""], "--dlq must not be empty (a queue name)"),
        (["serve", "--port", "70000"], "--port must be an integer in 0..65535, got 70000"),
        (["serve", "--service", " "], "--service must not be empty"),
        (["serve", "--dlq-warning", "-1"], "--dlq-warning must be an integer >= 0, got -1"),
        (["serve", "--cache-ttl", "nan"], "--cache-ttl must be a number of seconds >= 0"),
        (["serve", "--timeout", "0"], "--timeout must be a number of seconds > 0, got '0'"),
        (["serve", "--discover-every", "inf"], "--discover-every must be a number of seconds"),
    ],
)
def test_a_bad_value_names_its_option_before_connecting(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(*run_main([*DOWN, *argv], capsys))
    assert expected in line, line
    assert line.startswith("aioresil"), line
    assert "cannot reach Redis" not in line


def test_argparse_own_errors_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(*run_main(["dlq", "list", "--nope"], capsys))
    assert "unrecognized arguments: --nope" in line
    line = one_line(*run_main(["dlq", "purge"], capsys))
    assert "--older-than" in line and "required" in line
    line = one_line(*run_main(["demo", "--seed"], capsys))
    assert line == "aioresil demo: error: --seed: expected one argument (see aioresil demo --help)"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dlq", "--dlq", "", "stats"], "--dlq must not be empty"),
        (["dlq", "list", "--type", ""], "--type must be a non-empty string"),
        (["demo", "--interval", "nan"], "--interval must be a number of seconds >= 0"),
    ],
)
def test_the_reported_cases_as_a_user_runs_them(args: list[str], expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORESIL_")}
    result = subprocess.run(
        [sys.executable, "-m", "aioresil", *DOWN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    line = one_line(result.returncode, result.stderr)
    assert expected in line
    assert "recovery_timeout" not in line and "name must" not in line
