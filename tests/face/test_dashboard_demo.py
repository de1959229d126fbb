"""``aioresil demo --serve``, run as a real subprocess: the dashboard answers while it runs."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aioresil", "demo", "--serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_demo_serve_shows_the_breakers_and_dead_letters_while_it_runs() -> None:
    proc = start("--port", "0", "--rounds", "2", "--calls", "40", "--interval", "0.02")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.fullmatch(r"dashboard: (http://127\.0\.0\.1:\d+/)\n", first)
        assert match, first
        url = match.group(1)
        token_line = proc.stdout.readline()
        assert token_line.startswith("admin token (reset breakers, retry dead letters): ")
        token = token_line.rsplit(" ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=5) as client:
            page = client.get("")
            breakers = client.get("api/breakers").json()
            config = client.get("api/config").json()
            refused = client.post("api/breakers/upstream/reset")
            reset = client.post(
                "api/breakers/upstream/reset", headers={"Authorization": f"Bearer {token}"}
            )
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert page.status_code == 200
    assert "aioresil demo dashboard" in page.text
    assert [b["name"] for b in breakers] == ["search", "upstream"]
    assert config == {
        "title": "aioresil demo",
        "breakers": True,
        "dlq": True,
        "admin": True,
        "retry": True,
    }
    assert refused.status_code == 401
    assert reset.status_code == 200
    assert proc.returncode == 0, err
    assert "upstream: closed -> open" in out
    assert "upstream: half_open -> closed" in out
    dead = re.search(r"stopped after 2 round\(s\); (\d+) dead letters", out)
    assert dead and int(dead.group(1)) > 0, out
    assert "Traceback" not in err


def test_demo_serve_on_a_busy_port_says_so_without_a_traceback() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = start("--port", str(port), "--rounds", "1")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "dashboard:" not in out
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
