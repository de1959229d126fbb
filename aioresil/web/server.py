"""Listening sockets and a uvicorn runner that behaves like a server should.

Why our own socket: a command must bind *before* it announces its URL (a busy port is one
line and a non-zero exit, not a banner followed by an error). But a socket made with
``socket.socket(AF_INET, SOCK_STREAM)`` has protocol number 0, and asyncio only sets
``TCP_NODELAY`` on accepted sockets whose protocol is ``IPPROTO_TCP``: uvicorn then writes the
response head and body in two segments, Nagle holds the second until the client's delayed
ACK, and every keep-alive request waits ~40 ms. :func:`listen` creates the socket with
``IPPROTO_TCP`` (and sets ``TCP_NODELAY`` on the listener, which Linux copies to accepted
sockets) so keep-alive requests are answered at once.

Why our own signal handling: uvicorn re-raises a captured SIGTERM after its graceful shutdown,
so the process dies with 143 instead of exiting 0. :func:`serve_socket` shuts down on SIGINT
or SIGTERM and returns normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any, Literal

__all__ = ["bound_url", "listen", "serve_socket"]


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` (``port`` 0: any free port).

    Raises:
        OSError: the address is taken or not local (the caller prints it in one line).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bound_url(sock: socket.socket) -> str:
    """``http://host:port`` of a listening socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve_socket(
    app: Any,
    sock: socket.socket,
    *,
    lifespan: Literal["on", "off", "auto"] = "on",
    on_started: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve ``app`` with uvicorn on ``sock`` until SIGINT/SIGTERM (or ``stop`` is set).

    ``on_started`` runs once uvicorn accepts connections (announce the URL there). Returns 0
    after a graceful shutdown (SIGTERM or ``stop``), 130 after one on Ctrl-C (SIGINT, the
    shell's convention), 1 when the server failed to start. Needs ``uvicorn``.
    """
    import uvicorn

    received: list[int] = []

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The loop's handlers instead of uvicorn's: shut down, then return (exit 0).
            loop = asyncio.get_running_loop()
            installed: list[int] = []
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(signum, self._on_signal, signum)
                    installed.append(signum)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or no signals here: stop by `stop` instead
            try:
                yield
            finally:
                for number in installed:
                    loop.remove_signal_handler(number)

        def _on_signal(self, signum: int) -> None:
            received.append(signum)
            if self.should_exit and signum == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: do not wait for open connections
            self.should_exit = True

    config = uvicorn.Config(
        app, lifespan=lifespan, ws="none", log_level="warning", access_log=False
    )
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    watcher: asyncio.Task[Any] | None = None
    try:
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.01)
        if not server.started:
            await task
            return 1
        if on_started is not None:
            on_started()
        if stop is not None:

            async def watch() -> None:
                await stop.wait()
                server.should_exit = True

            watcher = asyncio.ensure_future(watch())
        await task
        return 130 if signal.SIGINT in received else 0
    finally:
        if watcher is not None:
            watcher.cancel()
        if not task.done():
            server.should_exit = True
            await task
