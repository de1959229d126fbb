"""``examples/web_server.py`` as a real process, driven with real HTTP on loopback.

The example serves a Starlette app (``GET /quote/{upstream}`` through a per-upstream breaker,
the health app mounted at ``/ops``) and a simulated upstream whose names can be switched to
failing. Each test starts it as a subprocess on free ports, then: healthy calls succeed; the
upstream fails; after the threshold the circuit opens and calls get a 503 with ``retry_after``
*without reaching the upstream* (its own request counter stops); the upstream recovers; after
the recovery timeout two trial calls close the circuit; the breakers endpoint shows each step.
On Redis, a second copy of the service sharing the circuit rejects as soon as the first one
trips it, and closes it for both.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aioresil import CircuitBreaker, CircuitState, RedisBackend

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from examples.web_server import breaker_config  # after the importorskips

from ..helpers import until_sync
from ..servers import DELAYED_ACK_SECONDS, keepalive_seconds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "web_server.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

THRESHOLD = 3
RECOVERY = 0.5  # seconds: short, so the whole outage-and-recovery cycle takes about 1 s


class Service:
    """One running copy of the example: its process and the URLs it printed."""

    def __init__(self, process: subprocess.Popen[bytes], urls: dict[str, str], log: Path):
        self.process = process
        self.urls = urls
        self.log = log
        self.http = httpx.Client(base_url=urls["app"], timeout=10, trust_env=False)
        self.upstream = httpx.Client(base_url=urls["upstream"], timeout=10, trust_env=False)

    def quote(self, name: str = "acme") -> httpx.Response:
        return self.http.get(f"/quote/{name}")

    def breakers(self) -> dict[str, Any]:
        response = self.http.get("/ops/health/circuit-breakers")
        assert response.status_code == 200, response.text  # degraded is still 200
        body: dict[str, Any] = response.json()
        return body

    def state(self, name: str = "acme") -> str:
        state: str = self.breakers()["circuit_breakers"][name]["state"]
        return state

    def upstream_requests(self, name: str = "acme") -> int:
        count: int = self.upstream.get("/control").json()["requests"][name]
        return count

    def switch(self, mode: str, name: str = "acme") -> None:
        response = self.upstream.put(f"/control/{name}", json={"mode": mode})
        assert response.json() == {"name": name, "mode": mode}

    def close(self) -> None:
        self.http.close()
        self.upstream.close()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start copies of the example; every one still running is SIGKILLed by PID at teardown."""
    started: list[Service] = []

    def start(*args: str) -> Service:
        log = tmp_path / f"web{len(started)}.log"
        with log.open("w") as out, (tmp_path / f"web{len(started)}.err").open("w") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--json",
                    "--port",
                    "0",
                    "--recovery-timeout",
                    str(RECOVERY),
                    "--failure-threshold",
                    str(THRESHOLD),
                    *args,
                ],
                stdout=out,
                stderr=err,
                env=ENV,
                cwd=ROOT,
            )

        def printed() -> bool:  # the URLs are printed once both servers accept
            assert process.poll() is None, "web_server.py exited"
            return bool(log.read_text().strip())

        try:
            until_sync(printed, within=30, interval=0.02, what="web_server.py's URLs")
        except AssertionError:
            process.kill()
            process.wait()
            stderr = (tmp_path / f"web{len(started)}.err").read_text()
            pytest.fail(f"web_server.py did not start: {stderr}")
        service = Service(process, json.loads(log.read_text().splitlines()[0]), log)
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.close()
            if service.process.poll() is None:
                os.kill(service.process.pid, signal.SIGKILL)
            service.process.wait(timeout=10)


def check_open_rejection(response: httpx.Response) -> None:
    assert response.status_code == 503
    body = response.json()
    assert body["upstream"] == "acme"
    assert body["state"] == "open"
    assert 0 < body["retry_after"] <= RECOVERY
    assert response.headers["Retry-After"] == "1"  # whole seconds, at least 1


def trip(service: Service) -> None:
    """Switch acme to failing; exactly THRESHOLD calls reach it, then the circuit is open."""
    before = service.upstream_requests()
    service.switch("failing")

    statuses = [service.quote().status_code for _ in range(THRESHOLD)]
    opened = service.quote()

    assert statuses == [502] * THRESHOLD  # the upstream's 503s, counted as failures
    check_open_rejection(opened)
    assert service.upstream_requests() == before + THRESHOLD


def recover(service: Service) -> None:
    """Switch acme back; after the recovery timeout two trial calls close the circuit."""
    service.switch("healthy")
    before = service.upstream_requests()
    rejected = 0
    response = service.quote()

    def trial_let_through() -> bool:  # until the first trial call
        nonlocal rejected, response
        if response.status_code != 503:
            return True
        rejected += 1
        response = service.quote()
        return response.status_code != 503

    until_sync(trial_let_through, within=10, interval=0.05, what="a trial call let through")
    assert response.status_code == 200
    assert service.state() == "half_open"  # one success of the two it needs

    second = service.quote()

    assert second.status_code == 200
    assert service.upstream_requests() == before + 2  # the 503s while waiting never reached it
    body = service.breakers()
    assert body["circuit_breakers"]["acme"]["state"] == "closed"
    assert body["status"] == "healthy"
    assert body["summary"]["all_healthy"]


def outage_and_recovery(service: Service) -> None:
    # Healthy: calls go through, each one reaching the upstream once.
    for served in range(1, 4):
        response = service.quote()
        assert response.status_code == 200
        assert response.json()["served"] == served
    assert service.quote("globex").status_code == 200
    assert service.state() == "closed"

    trip(service)

    # Open: rejected fast. A 503 never reaches the upstream; only a trial (a call made after
    # the 0.5 s recovery timeout, if this machine is that slow) may, and fails again (502).
    before = service.upstream_requests()
    statuses = []
    for _ in range(5):
        response = service.quote()
        statuses.append(response.status_code)
        if response.status_code == 503:
            check_open_rejection(response)
    assert set(statuses) <= {502, 503}
    assert 503 in statuses
    assert service.upstream_requests() == before + statuses.count(502)
    # One circuit per upstream: globex is untouched by acme's outage.
    assert service.quote("globex").status_code == 200
    body = service.breakers()
    assert body["status"] == "degraded"
    assert body["circuit_breakers"]["acme"]["state"] == "open"
    assert body["circuit_breakers"]["globex"]["state"] == "closed"
    assert body["summary"]["open_circuits"] == 1

    recover(service)


def test_web_server_on_memory_opens_rejects_without_calling_the_upstream_and_closes(
    start_service: Callable[..., Service],
) -> None:
    service = start_service("--upstream-port", "0")

    outage_and_recovery(service)

    # The mounted health app's other routes answer under /ops too.
    assert service.http.get("/ops/health").json()["status"] == "healthy"
    assert service.http.get("/ops/health/ready").status_code == 200
    metrics = service.http.get("/ops/metrics")
    assert metrics.status_code == 200
    assert 'name="acme"' in metrics.text
    assert service.http.get("/ops/dashboard/").status_code == 200


def test_web_server_unknown_upstream_is_a_404_and_creates_no_breaker(
    start_service: Callable[..., Service],
) -> None:
    service = start_service("--upstream-port", "0")

    response = service.quote("nope")

    assert response.status_code == 404
    assert response.json()["upstreams"] == ["acme", "globex"]
    assert sorted(service.breakers()["circuit_breakers"]) == ["acme", "globex"]


def test_web_server_keepalive_requests_do_not_wait_for_the_delayed_ack(
    start_service: Callable[..., Service],
) -> None:
    service = start_service("--upstream-port", "0")
    requests = 200
    seconds = keepalive_seconds(service.urls["app"] + "/ops/health", requests)
    assert seconds < requests * DELAYED_ACK_SECONDS / 2, seconds


def test_web_server_stops_both_servers_cleanly_on_sigterm(
    start_service: Callable[..., Service],
) -> None:
    service = start_service("--upstream-port", "0")
    assert service.quote().status_code == 200

    service.process.send_signal(signal.SIGTERM)

    assert service.process.wait(timeout=10) == 0
    with pytest.raises(httpx.ConnectError):
        service.quote()


def test_web_server_on_redis_shares_the_circuit_between_two_copies(
    start_service: Callable[..., Service], redis_url: str
) -> None:
    first = start_service("--redis", redis_url, "--upstream-port", "0")
    second = start_service("--redis", redis_url, "--upstream-url", first.urls["upstream"])
    assert second.quote("globex").status_code == 200  # same upstream, its own breaker

    outage_and_recovery(first)
    trip(first)

    # The second copy never called acme; the circuit the first one opened rejects it at once.
    before = first.upstream_requests()
    check_open_rejection(second.quote())
    assert first.upstream_requests() == before
    assert second.state() == "open"
    assert asyncio.run(shared_state(redis_url)) is CircuitState.OPEN

    recover(second)  # the second copy's trials close the circuit for both

    assert first.state() == "closed"
    assert asyncio.run(shared_state(redis_url)) is CircuitState.CLOSED
    assert first.quote().status_code == 200


async def shared_state(url: str) -> CircuitState:
    """acme's state as stored in Redis, read by a third party."""
    config = breaker_config(failure_threshold=THRESHOLD, recovery_timeout=RECOVERY)
    async with RedisBackend.from_url(url) as backend:
        return (await CircuitBreaker("acme", config=config, backend=backend).stats()).state
