"""Start and stop real ``redis-server`` processes on free loopback ports.

Tests never use a server they did not start: each fixture launches ``redis-server`` with no
persistence on ``127.0.0.1`` and a free port, waits until it answers ``PING``, and stops it by
PID. Without the binary the real-Redis tests are skipped, except when
``AIORESIL_REQUIRE_REDIS=1`` (CI), where a missing server is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .helpers import until_sync

REQUIRE = os.environ.get("AIORESIL_REQUIRE_REDIS") == "1"


def required_tool(name: str, package: str | None = None) -> str:
    """The path of the program ``name`` (apt ``package`` installs it, by default the package of
    that name): a skip when it is missing, a failure under ``AIORESIL_REQUIRE_REDIS=1``."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH (apt-get install -y {package or name})"
        if REQUIRE:
            pytest.fail(f"{message}; AIORESIL_REQUIRE_REDIS=1 forbids skipping", pytrace=False)
        pytest.skip(message)
    return path


def redis_binary() -> str:
    return required_tool("redis-server")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server we started, by PID: SIGTERM, then SIGKILL after 5 s."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One ``redis-server`` process we own."""

    port: int
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="aioresil-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = redis_binary()
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.workdir,
            "--protected-mode",
            "yes",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        process = self.process

        def answering() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            return _ping(self.port)

        try:
            until_sync(answering, within=10, interval=0.02, what="redis-server answering PING")
        except AssertionError:
            self.stop()
            raise RuntimeError("redis-server did not answer PING within 10 s") from None
        return self

    def stop(self) -> None:
        """Stop by PID (SIGTERM, then SIGKILL)."""
        stop_process(self.process)

    def restart(self) -> None:
        """Stop and start again on the same port: data and script cache are gone."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def workdir_of(server: RedisServer) -> Path:
    return Path(server.workdir)


# The delayed-ACK stall a socket without TCP_NODELAY adds to every keep-alive response.
DELAYED_ACK_SECONDS = 0.040


def keepalive_seconds(url: str, requests: int = 200) -> float:
    """Seconds ``requests`` GETs of ``url`` take on ONE keep-alive connection.

    With the stall each request costs at least :data:`DELAYED_ACK_SECONDS` (a floor set by the
    kernel's timer, not by machine speed), so a total below half of ``requests`` times it
    proves no request stalled: a comparison a slow machine cannot flip.
    """
    import httpx

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(timeout=10, limits=limits, trust_env=False) as client:
        first = client.get(url)  # connects; not timed
        assert first.status_code == 200, first.text
        started = time.perf_counter()
        for _ in range(requests):
            response = client.get(url)
            assert response.status_code == 200
            assert response.headers.get("connection", "").lower() != "close"
        return time.perf_counter() - started
