"""``examples/llm_failover.py`` as a real process: the agent keeps answering through the
backup provider, the primary's circuit opens and spares it, the dashboard shows it open."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from ..helpers import until_sync

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llm_failover.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_the_agent_keeps_answering_and_the_dashboard_shows_the_open_circuit(
    tmp_path: Path,
) -> None:
    out_path = tmp_path / "out.txt"
    with out_path.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE),
                "--json",
                "--serve",
                "--questions",
                "8",
                "--fail-from",
                "3",
                "--failure-threshold",
                "2",
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            env=ENV,
            cwd=ROOT,
        )
    try:

        def summarised() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            return bool(out_path.read_text().strip())

        until_sync(summarised, within=60, interval=0.05, what="the summary line")
        summary = json.loads(out_path.read_text().splitlines()[0])

        assert summary["answered"] == 8  # every question answered
        assert summary["answered_by"] == {"primary": 2, "backup": 6}
        # primary: 2 answers + 2 failures, then skipped unasked while its circuit is open
        assert summary["requests"] == {"primary": 4, "backup": 6}
        assert summary["breakers"] == {"primary": "open", "backup": "closed"}

        with httpx.Client(trust_env=False, timeout=10) as http:
            page = http.get(summary["dashboard"])
            breakers = http.get(summary["dashboard"] + "api/breakers").json()
        assert page.status_code == 200
        states = {b["name"]: b["state"] for b in breakers}
        assert states == {"primary": "open", "backup": "closed"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        if process.stderr is not None:
            process.stderr.close()


def test_a_taken_port_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), "--port", str(taken.getsockname()[1])],
            capture_output=True,
            text=True,
            timeout=60,
            env=ENV,
            cwd=ROOT,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "llm_failover: OSError: [Errno 98] Address already in use"
    ]


def test_without_serve_no_dashboard_url_is_given_for_a_stopped_server() -> None:
    """The server stops with the script: a URL printed then would point at nothing."""
    run = [sys.executable, str(EXAMPLE), "--questions", "3", "--fail-from", "9"]
    as_json = subprocess.run(
        [*run, "--json"], capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT
    )
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout.splitlines()[0])["dashboard"] is None
    as_text = subprocess.run(run, capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT)
    assert as_text.returncode == 0, as_text.stderr
    assert "http://" not in as_text.stdout
    assert "dashboard:           run with --serve to keep it up" in as_text.stdout
