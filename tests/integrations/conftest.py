from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .upstream import Upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A real aiohttp.web server on a free loopback port, stopped after the test."""
    server = await Upstream().start()
    try:
        yield server
    finally:
        await server.stop()
