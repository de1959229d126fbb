"""Count the commands a Redis server runs, with ``MONITOR`` (tests and benchmarks).

``MONITOR`` lists every command the server runs, pipelined ones included; commands a Lua
script runs are listed too, marked ``lua``, and are not round trips. So the count of client
commands between two ``ECHO`` markers is an upper bound of the round trips in between.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis


class Monitor:
    """Collects the commands the server runs, from a ``MONITOR`` connection in a thread."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._marker = redis.Redis.from_url(url)  # sends the ECHO markers
        self._monitor = self._client.monitor()
        self._monitor.__enter__()  # sends MONITOR and waits for its OK
        self.commands: list[dict[str, Any]] = []
        self._seen = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                command = self._monitor.next_command()
            except Exception:
                return
            with self._seen:
                self.commands.append(command)
                self._seen.notify_all()

    async def during(self, action: Callable[[], Awaitable[object]]) -> list[dict[str, Any]]:
        """Every command (``lua`` ones included) the server ran while ``action()`` ran: from
        an ``ECHO`` marker sent before it to one sent after it, once ``MONITOR`` shows that."""
        start, end = f"mark-{uuid.uuid4().hex}", f"mark-{uuid.uuid4().hex}"
        self._marker.echo(start)
        await action()
        self._marker.echo(end)
        with self._seen:
            assert self._seen.wait_for(
                lambda: any(end in c["command"] for c in self.commands), timeout=30
            ), "the end marker never reached MONITOR"
            commands = list(self.commands)
        names = [str(c["command"]) for c in commands]
        first = next(i for i, n in enumerate(names) if start in n)
        last = next(i for i, n in enumerate(names) if end in n)
        return commands[first + 1 : last]

    def close(self) -> None:
        self._marker.close()
        self._client.close()  # ends next_command() in the thread
        self._monitor.connection.disconnect()
        self._thread.join(timeout=10)


def client_commands(commands: list[dict[str, Any]]) -> list[str]:
    """The client's own commands (the round trips), without those a script ran."""
    return [str(c["command"]) for c in commands if c.get("client_type") != "lua"]
