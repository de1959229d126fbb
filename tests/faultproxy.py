"""A fault-injecting TCP proxy for tests: put it between a client and a real ``redis-server``.

Why a proxy and not a mock: the faults that hurt in production (a black-holed host, replies
that never come back, a slow link, connections reset under a client) happen below redis-py,
on the socket. A proxy makes them for real, so the client library, its pool and its timeouts
all take part exactly as they would in production.

The proxy runs its own event loop in a daemon thread, so it keeps moving bytes whatever the
test's loop is doing (blocked in a sync call, or waiting on the very connection the proxy
holds), and synchronous code (benchmarks, subprocess tests) can use it too. The mode is
switched at run time from any thread and applies at once to open connections and new ones:

* ``PASS``: forward both ways.
* ``BLACKHOLE``: accept connections and keep them open, but drop every byte both ways (a dead
  host or a network partition: no RST, no FIN, nothing).
* ``DROP_REPLIES``: forward client -> server, swallow server -> client (the command runs, the
  reply is lost).
* ``LATENCY``: forward both ways, each chunk ``latency`` seconds late (order kept).
* ``RESET``: close every open connection with a TCP RST, and reset new ones on accept.

Example::

    with FaultProxy(redis_server.port) as proxy:
        client = redis.asyncio.Redis(port=proxy.port)
        proxy.set_mode(Mode.BLACKHOLE)
        ...
        proxy.set_mode(Mode.PASS)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy", "Mode"]


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    DROP_REPLIES = "drop_replies"
    LATENCY = "latency"
    RESET = "reset"


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), not a polite FIN: what a crashed peer or a firewall does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    transport.abort()


class FaultProxy:
    """A TCP proxy on ``127.0.0.1:<port>`` forwarding to ``127.0.0.1:<upstream_port>``.

    Args:
        upstream_port: where the real server listens.
        mode: the mode to start in (default :attr:`Mode.PASS`).
        latency: seconds added to each forwarded chunk in :attr:`Mode.LATENCY`.
    """

    def __init__(self, upstream_port: int, *, mode: Mode = Mode.PASS, latency: float = 0.0):
        self.upstream_port = upstream_port
        self.mode = mode
        self.latency = latency
        self.port = 0
        self.accepted = 0  # connections accepted so far (to see that a client reconnected)
        self.requests_seen = 0  # chunks read from clients (to see that a command was sent)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> Self:
        self._thread.start()
        self._started.wait(10)
        if self._start_error is not None:
            raise RuntimeError("fault proxy failed to start") from self._start_error
        return self

    def set_mode(self, mode: Mode, *, latency: float | None = None) -> None:
        """Switch mode now; :attr:`Mode.RESET` also resets every open connection."""
        if latency is not None:
            self.latency = latency
        self.mode = mode
        if mode is Mode.RESET:
            self._call(self._reset_all)

    def reset_connections(self) -> None:
        """Reset every open connection once, without changing the mode."""
        self._call(self._reset_all)

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, fn: object) -> None:
        """Run ``fn`` on the proxy's loop and wait for it (so the effect is visible on return)."""
        done = threading.Event()

        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    # ------------------------------------------------------------------ proxy loop (own thread)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        # drain what the shutdown left (cancelled pumps)
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def _reset_all(self) -> None:
        for client, upstream in list(self._pairs):
            _abort(client)
            if upstream is not None:
                _abort(upstream)
        self._pairs.clear()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.mode is Mode.RESET:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            if self.mode is Mode.BLACKHOLE:
                # a black hole does not refuse: hold the client, drop what it sends
                pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
                self._pairs.add(pair)
                try:
                    while await reader.read(65536):
                        pass
                except OSError:
                    pass
                finally:
                    self._pairs.discard(pair)
                    writer.close()
                return
            _abort(writer)  # upstream down: the client sees its connection reset
            return
        with contextlib.suppress(OSError):
            up_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, replies=False),
                self._pump(up_reader, writer, replies=True),
            )
        finally:
            self._pairs.discard(pair)
            for w in (writer, up_writer):
                if not w.transport.is_closing():
                    w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not replies:
                    self.requests_seen += 1
                mode = self.mode
                if mode is Mode.BLACKHOLE or (mode is Mode.DROP_REPLIES and replies):
                    continue
                if mode is Mode.RESET:
                    break
                if mode is Mode.LATENCY and self.latency > 0:
                    await asyncio.sleep(self.latency)  # the fault itself: a slow network
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # one side ended: end the other one too (a half-open pair would hang the client)
            if not writer.transport.is_closing():
                if self.mode is Mode.RESET:
                    _abort(writer)
                else:
                    writer.close()
