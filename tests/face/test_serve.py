"""``aioresil serve`` and ``aioresil demo --serve`` as real processes: they behave like servers.

Bind first (a busy port: one line, exit 1, no banner), announce once accepting, answer
keep-alive requests without the delayed-ACK stall, exit 0 on SIGTERM, take every health
option as a flag.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..helpers import until_sync
from ..servers import DELAYED_ACK_SECONDS, RedisServer, keepalive_seconds

pytestmark = pytest.mark.redis_server

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 200
BANNER = re.compile(r"aioresil health app on (http://127\.0\.0\.1:\d+)/health")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AIORESIL_REDIS_URL",)}
    env.pop("AIORESIL_ADMIN_TOKEN", None)
    return {**env, "PYTHONPATH": str(ROOT), **extra}


class Served:
    def __init__(self, process: subprocess.Popen[str], base: str) -> None:
        self.process = process
        self.base = base


@pytest.fixture
def serve(redis_url: str) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> Served:
        process = subprocess.Popen(
            [sys.executable, "-m", "aioresil", "--redis", redis_url, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=_env(),
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()  # printed only once the server accepts connections
        match = BANNER.search(line)
        if match is None:
            process.kill()
            _, err = process.communicate(timeout=30)
            pytest.fail(f"serve did not start: {line!r} {err!r}")
        return Served(process, match.group(1))

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)


def test_serve_keepalive_requests_do_not_wait_for_the_delayed_ack(serve: object) -> None:
    served = serve()  # type: ignore[operator]
    seconds = keepalive_seconds(f"{served.base}/health", REQUESTS)
    assert seconds < REQUESTS * DELAYED_ACK_SECONDS / 2, seconds


def test_demo_serve_keepalive_requests_do_not_wait_for_the_delayed_ack() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aioresil", "demo", "--serve", "--port", "0", "--interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"dashboard: (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, line
        seconds = keepalive_seconds(f"{match.group(1)}api/config", REQUESTS)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert seconds < REQUESTS * DELAYED_ACK_SECONDS / 2, seconds


def test_sigterm_shuts_down_gracefully_with_exit_0(serve: object) -> None:
    served = serve()  # type: ignore[operator]
    assert httpx.get(f"{served.base}/health", trust_env=False).status_code == 200
    served.process.send_signal(signal.SIGTERM)
    _, err = served.process.communicate(timeout=30)
    assert served.process.returncode == 0, err
    assert "Traceback" not in err


def test_a_busy_port_is_one_line_and_no_banner(redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "aioresil", "--redis", redis_url, "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=_env(),
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"aioresil: error: cannot listen on 127.0.0.1:{port}: ")
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_every_health_option_is_a_flag(serve: object, redis_url: str) -> None:
    import asyncio

    from aioresil import BreakerConfig, BreakerRegistry, DeadLetterQueue, RedisBackend

    async def seed() -> None:
        async with RedisBackend.from_url(redis_url, listen=False) as backend:
            registry = BreakerRegistry(
                backend=backend, default_config=BreakerConfig(failure_threshold=1)
            )
            with pytest.raises(RuntimeError):
                async with registry.get("payments"):
                    raise RuntimeError("down")
            dlq = DeadLetterQueue(backend, name="jobs")
            for n in range(3):
                await dlq.push("job", {"n": n}, RuntimeError("boom"))

    asyncio.run(seed())
    served = serve(  # type: ignore[operator]
        "--service",
        "checkout",
        "--dlq",
        "jobs",
        "--dlq-warning",
        "1",
        "--dlq-critical",
        "3",
        "--open-circuit-is-unhealthy",
        "--cache-ttl",
        "0.5",
        "--timeout",
        "5",
    )
    with httpx.Client(base_url=served.base, trust_env=False) as client:
        live = client.get("/health").json()
        breakers = client.get("/health/circuit-breakers")
        dlq = client.get("/health/dlq")
    assert live["service"] == "checkout"
    assert breakers.status_code == 503
    assert breakers.json()["status"] == "unhealthy"
    assert dlq.status_code == 503  # 3 entries reach the critical threshold of 3
    assert served.process.poll() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dlq-warning", "9", "--dlq-critical", "3"],
            "need 0 <= --dlq-warning <= --dlq-critical",
        ),
        (["--cache-ttl", "-1"], "--cache-ttl must be"),
        (["--timeout", "0"], "--timeout must be"),
        (["--port", "70000"], "--port must be an integer in 0..65535"),
        (["--service", " "], "--service must not be empty"),
    ],
)
def test_bad_flags_are_one_line_with_exit_2(redis_url: str, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aioresil", "--redis", redis_url, "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def _start_serve(url: str, *args: str, env: dict[str, str] | None = None) -> Served:
    """``aioresil --redis url serve --port 0`` once its banner is out; the caller kills it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aioresil", "--redis", url, "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(**(env or {})),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = BANNER.search(line)
    if match is None:
        process.kill()
        _, err = process.communicate(timeout=30)
        pytest.fail(f"serve did not start: {line!r} {err!r}")
    return Served(process, match.group(1))


async def _seed_breaker(url: str, name: str) -> None:
    from aioresil import BreakerRegistry, RedisBackend

    async with RedisBackend.from_url(url, listen=False) as backend:
        breaker = BreakerRegistry(backend=backend).get(name)
        async with breaker:
            pass


def _stop(served: Served) -> str:
    served.process.send_signal(signal.SIGTERM)
    _, err = served.process.communicate(timeout=30)
    assert served.process.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def test_serve_starts_degraded_while_redis_is_down_and_recovers(
    own_redis_server: RedisServer,
) -> None:
    # A pod restarted during an outage still answers its probes: liveness 200, readiness 503,
    # /metrics 200 with aioresil_backend_up 0; once Redis is back, ready turns 200 and the
    # breakers on it are discovered, without a restart.
    own_redis_server.stop()
    served = _start_serve(own_redis_server.url, "--discover-every", "0")
    try:
        assert served.process.stderr is not None
        warning = served.process.stderr.readline()  # written before the banner
        assert warning.startswith("aioresil serve: warning: cannot reach Redis at 127.0.0.1:")
        assert "/health/ready answers 503 until" in warning
        with httpx.Client(base_url=served.base, trust_env=False, timeout=10) as client:
            assert client.get("/health").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["backends"][0]["state"] == "unavailable"
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert re.search(r"^aioresil_backend_up\{[^}]*\} 0$", metrics.text, re.M)

            own_redis_server.start()
            asyncio.run(_seed_breaker(own_redis_server.url, "payments"))

            def ready_again() -> bool:
                return bool(client.get("/health/ready").status_code == 200)

            until_sync(ready_again, within=30, interval=0.1, what="/health/ready 200 again")
            up = client.get("/metrics").text
            assert re.search(r"^aioresil_backend_up\{[^}]*\} 1$", up, re.M)

            def discovered() -> bool:
                body = client.get("/health/circuit-breakers").json()
                return "payments" in body["circuit_breakers"]

            until_sync(discovered, within=30, interval=0.1, what="payments discovered")
    finally:
        err = _stop(served)
    assert "Redis at 127.0.0.1:" in err and "is reachable again" in err


def _serve_refused(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m aioresil *argv`` run to its end (a serve that refuses to start)."""
    return subprocess.run(
        [sys.executable, "-m", "aioresil", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
    )


def test_serve_still_refuses_a_wrong_password(own_redis_server: RedisServer) -> None:
    # A configuration error, not an outage: no server, one line, exit 1, no password shown.
    import redis

    with redis.Redis(port=own_redis_server.port) as client:
        client.config_set("requirepass", "right-password")
    url = f"redis://:wrong-password@127.0.0.1:{own_redis_server.port}/0"
    result = _serve_refused("--redis", url, "serve", "--port", "0")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "refused the credentials" in result.stderr
    assert "wrong-password" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_serve_still_refuses_a_malformed_url() -> None:
    result = _serve_refused("--redis", "redis://127.0.0.1:notaport/0", "serve")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Port could not be cast to integer" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_serve_warns_that_handler_needs_the_admin_token(redis_url: str) -> None:
    # The retry route exists only with the admin routes: without a token --handler does
    # nothing, and says so once (the server still serves its health endpoints).
    served = _start_serve(redis_url, "--handler", "asyncio:sleep")
    try:
        with httpx.Client(base_url=served.base, trust_env=False) as client:
            retry = client.post("/admin/dlq/entries/0123456789ab-0123456789abcdef/retry")
    finally:
        err = _stop(served)
    [line] = err.splitlines()
    assert line.startswith("aioresil serve: warning: --handler is ignored: ")
    assert "AIORESIL_ADMIN_TOKEN" in line
    assert retry.status_code == 404

    token = {"AIORESIL_ADMIN_TOKEN": "a-token-for-tests-0123456789"}
    served = _start_serve(redis_url, "--handler", "asyncio:sleep", env=token)
    assert _stop(served) == ""  # with the token: no warning
