"""What a client's pool puts on the wire: one entry per write, the command names in it.

Why at the connection and not ``execute_command``: aioresil sends its scripts with its own
packed ``EVALSHA`` (``aioresil/backends/wire.py``), and pipelines skip ``execute_command``
too. A write is one round trip (a pipeline's commands go out in one write), so ``writes``
counts round trips and ``commands`` what they carried. For counting on the server's side,
with script internals, see ``tests/monitor.py`` (``MONITOR``).
"""

from __future__ import annotations

from typing import Any


def command_names(packed: bytes) -> list[str]:
    """The command name of every RESP array in ``packed`` (one per pipelined command)."""
    names: list[str] = []
    pos = 0
    while pos < len(packed):
        if packed[pos : pos + 1] != b"*":
            raise ValueError(f"not a RESP array at {pos}: {packed[pos : pos + 20]!r}")
        end = packed.index(b"\r\n", pos)
        count = int(packed[pos + 1 : end])
        pos = end + 2
        for index in range(count):
            end = packed.index(b"\r\n", pos)
            length = int(packed[pos + 1 : end])
            data = packed[end + 2 : end + 2 + length]
            if index == 0:
                names.append(data.decode().upper())
            pos = end + 2 + length + 2
    return names


class WireSpy:
    """Record every write made on connections of ``client``'s pool from now on."""

    def __init__(self, client: Any) -> None:
        self.writes: list[list[str]] = []
        pool = client.connection_pool
        checkout = pool.get_connection

        async def spied_checkout(*args: Any, **kwargs: Any) -> Any:
            connection = await checkout(*args, **kwargs)
            if getattr(connection, "_wire_spy", None) is None:
                send = connection.send_packed_command

                async def spied_send(command: Any, *a: Any, **kw: Any) -> Any:
                    if isinstance(command, str):
                        data = command.encode()
                    elif isinstance(command, bytes | bytearray | memoryview):
                        data = bytes(command)
                    else:
                        data = b"".join(bytes(part) for part in command)
                    connection._wire_spy.writes.append(command_names(data))
                    return await send(command, *a, **kw)

                connection.send_packed_command = spied_send
            connection._wire_spy = self  # the newest spy of this pool hears it
            return connection

        pool.get_connection = spied_checkout

    @property
    def commands(self) -> list[str]:
        return [name for write in self.writes for name in write]

    def count(self, name: str | None = None) -> int:
        """Commands sent (of that name)."""
        return len(self.commands) if name is None else self.commands.count(name)

    def reset(self) -> None:
        self.writes.clear()
