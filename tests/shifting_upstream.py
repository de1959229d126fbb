"""A local TCP upstream whose latency can be shifted while it runs (tests and benchmarks).

Each request is one line; the server waits ``latency`` seconds (plus up to ``jitter``) and
answers one line, or, for a ``hang`` fraction of requests (or a request that says ``hang``),
never answers (a black-holed request: only a timeout ends it). Bound to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass
class ShiftingUpstream:
    latency: float = 0.01
    jitter: float = 0.0
    hang: float = 0.0
    seed: int = 7
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _random: random.Random = field(default_factory=random.Random)

    async def start(self) -> ShiftingUpstream:
        self._random.seed(self.seed)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while line := await reader.readline():
                if line == b"hang\n" or self._random.random() < self.hang:
                    await asyncio.sleep(3600)  # the fault itself: a call that never answers
                # the behaviour under test: the upstream's (shifting) latency
                await asyncio.sleep(self.latency + self.jitter * self._random.random())
                writer.write(b"ok\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def request(self, *, hang: bool = False) -> None:
        """One request on a fresh connection (a cancelled request closes its connection);
        ``hang`` asks the server never to answer it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"hang\n" if hang else b"get\n")
            await writer.drain()
            await reader.readline()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await self._server.wait_closed()
