"""The shipped alert rules and Grafana dashboard (``aioresil/ops/``) against the real tools.

* ``promtool check rules`` passes on ``alerts.yml``.
* A real Prometheus (Debian's package) on a free port, with a test copy of the rules whose
  ``for:`` is 1 s, scrapes a real ``aioresil serve`` every second; the test polls
  ``/api/v1/alerts`` until the open-circuit, forced-open and critical-DLQ alerts fire.
* Every metric name the dashboard queries is one the app exports, and every query parses
  (promtool checks them wrapped as recording rules).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aioresil import BreakerConfig, BreakerRegistry, DeadLetterQueue, health_app
from aioresil.health.instruments import CallMetrics
from aioresil.ops import ASSETS, asset_path
from aioresil.testing import FakeClock

from ..helpers import until_sync
from ..servers import free_port, required_tool

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    return required_tool(name, "prometheus")


def test_the_assets_are_package_data() -> None:
    for name in ASSETS:
        assert asset_path(name).is_file()
    with pytest.raises(ValueError, match="no ops asset"):
        asset_path("nope.yml")


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(asset_path("alerts.yml"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


# ---------------------------------------------------------------------- the dashboard


async def exported_names() -> set[str]:
    """Every sample name a fully featured app exports (breakers, histogram, DLQ, backend)."""
    clock = FakeClock()
    config = BreakerConfig(
        failure_rate_threshold=0.5,
        minimum_calls=1,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
    )
    registry = BreakerRegistry(default_config=config, clock=clock)
    calls = CallMetrics()
    calls.observe_registry(registry)
    async with registry.get("search"):
        clock.advance(0.01)
    dlq = DeadLetterQueue(name="jobs", clock=clock)
    await dlq.push("email", {}, "down")
    app = health_app(registry=registry, dlq=dlq, call_metrics=calls)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        text = (await client.get("/metrics")).text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def dashboard_queries() -> list[str]:
    board = json.loads(asset_path("grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            queries.append(var["definition"])
    return queries


async def test_the_dashboard_queries_only_exported_metrics() -> None:
    exported = await exported_names()
    board = json.loads(asset_path("grafana-dashboard.json").read_text())
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Breaker state", "Call rate by outcome", "Call latency (p50, p99)"} <= titles
    assert {"Dead letters", "Oldest dead letter"} <= titles
    used = {name for q in dashboard_queries() for name in re.findall(r"aioresil_[a-z_]+", q)}
    assert used, "the dashboard queries nothing"
    assert used - exported == set(), f"not exported: {sorted(used - exported)}"
    # The dashboard covers breakers, calls, latency and the queue.
    for needed in (
        "aioresil_circuitbreaker_state",
        "aioresil_circuitbreaker_calls_total",
        "aioresil_circuitbreaker_calls_seconds_bucket",
        "aioresil_dlq_entries",
        "aioresil_dlq_oldest_age_seconds",
    ):
        assert needed in used, needed


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    rules = []
    for n, query in enumerate(q for q in dashboard_queries() if not q.startswith("label_values")):
        expr = query.replace("$__rate_interval", "1m").replace("$name", ".*")
        rules.append(
            {"record": f"aioresil:dashboard_query_{n}", "expr": expr.replace("$queue", ".*")}
        )
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------- a real Prometheus


@pytest.fixture
def serve_redis(redis_url: str) -> Iterator[str]:
    """``aioresil serve`` on Redis with ``payments`` open, ``maintenance`` forced open and 2
    dead letters (critical threshold 2); yields its base URL."""
    from aioresil import RedisBackend

    async def seed() -> None:
        async with RedisBackend.from_url(redis_url, listen=False) as backend:
            registry = BreakerRegistry(
                backend=backend, default_config=BreakerConfig(failure_threshold=1)
            )
            with pytest.raises(RuntimeError):
                async with registry.get("payments"):
                    raise RuntimeError("down")
            await registry.get("maintenance").force_open()
            dlq = DeadLetterQueue(backend, name="jobs")
            for n in range(2):
                await dlq.push("email", {"n": n}, RuntimeError("smtp down"))

    asyncio.run(seed())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORESIL_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aioresil",
            "--redis",
            redis_url,
            "serve",
            "--port",
            "0",
            "--dlq",
            "jobs",
            "--dlq-warning",
            "1",
            "--dlq-critical",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)/health", line)
        assert match, (line, process.stderr.read() if process.stderr else "")
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_a_real_prometheus_fires_the_shipped_alerts(serve_redis: str, tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    # A test copy of the rules with every `for:` at 1 s, so the alerts fire within seconds.
    rules = re.sub(r"for: \d+[smh]", "for: 1s", asset_path("alerts.yml").read_text())
    (tmp_path / "alerts.yml").write_text(rules)
    target = serve_redis.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{tmp_path / 'alerts.yml'}']\n"
        "scrape_configs:\n"
        f"  - job_name: aioresil\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    wanted = {
        ("AioresilCircuitOpen", "payments"),
        ("AioresilCircuitForcedOpen", "maintenance"),
        ("AioresilDeadLettersCritical", "jobs"),
        ("AioresilDeadLettersWarning", "jobs"),
    }
    firing: set[tuple[str, str]] = set()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, trust_env=False) as api:

            def all_firing() -> bool:
                nonlocal firing
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    alerts: list[dict[str, Any]] = api.get("/api/v1/alerts").json()["data"][
                        "alerts"
                    ]
                except (httpx.TransportError, ValueError):
                    # still starting: no socket yet, or a plain-text 503 before it is ready
                    return False
                firing = {
                    (a["labels"]["alertname"], a["labels"].get("name") or a["labels"].get("queue"))
                    for a in alerts
                    if a["state"] == "firing"
                }
                return wanted <= firing

            # 90 s only bounds a hang: we wait on the condition
            try:
                until_sync(all_firing, within=90, interval=0.25, what="the four alerts firing")
            except AssertionError as error:
                raise AssertionError(f"{error}; firing: {firing}") from None
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert ("AioresilCircuitOpen", "maintenance") not in firing  # forced open is its own alert
    assert not any(name == "AioresilBackendDown" for name, _ in firing)
    assert not any(name == "AioresilScrapeMissing" for name, _ in firing)
