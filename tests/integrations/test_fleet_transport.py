"""One circuit for the fleet: a ResilientTransport on Redis in another process opens it, and
this process's transport rejects without calling the upstream."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from aioresil import BreakerConfig, BreakerRegistry, CircuitOpenError, CircuitState, RedisBackend
from aioresil.integrations.httpx import ResilientTransport

from ..helpers import until
from .upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD = 3

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from aioresil import BreakerConfig, BreakerRegistry, RedisBackend
    from aioresil.integrations.httpx import ResilientTransport

    async def main(redis_url, base_url, threshold):
        async with RedisBackend.from_url(redis_url) as backend:
            config = BreakerConfig(failure_threshold=threshold, recovery_timeout=30)
            registry = BreakerRegistry(backend=backend, default_config=config)
            transport = ResilientTransport(registry=registry)
            async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
                statuses = [(await client.get(base_url + "/status/502")).status_code
                            for _ in range(threshold)]
            state = (await transport.breaker_for(transport.registry.names()[0]).stats()).state
            print(statuses, state.value, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.redis_server
async def test_a_circuit_opened_by_another_process_rejects_here_without_a_request(
    upstream: Upstream, redis_url: str
) -> None:
    async with RedisBackend.from_url(redis_url) as backend:
        config = BreakerConfig(failure_threshold=THRESHOLD, recovery_timeout=30)
        transport = ResilientTransport(
            registry=BreakerRegistry(backend=backend, default_config=config)
        )
        async with httpx.AsyncClient(
            base_url=upstream.url, transport=transport, trust_env=False
        ) as client:
            assert (await client.get("/status/200")).status_code == 200  # closed, known here

            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WORKER,
                redis_url,
                upstream.url,
                str(THRESHOLD),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            out, err = await asyncio.wait_for(worker.communicate(), 60)
            assert worker.returncode == 0, err.decode()
            assert out.decode().splitlines()[-1] == "[502, 502, 502] open"

            # The other process's trip reaches this one by pub/sub within milliseconds; then
            # this process rejects without a request.
            breaker = transport.breaker_for(f"http://127.0.0.1:{upstream.url.rsplit(':', 1)[1]}")
            await until(
                lambda: breaker.state is CircuitState.OPEN, within=10, what="the trip arriving"
            )
            with pytest.raises(CircuitOpenError) as caught:
                await client.get("/status/200")

        assert upstream.count("/status/502") == THRESHOLD
        assert upstream.count("/status/200") == 1
        assert caught.value.state is CircuitState.OPEN
        await transport.aclose()
