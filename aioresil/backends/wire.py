"""``EVALSHA`` written by us on a pooled connection: the script call at the wire's cost.

Why: a strict breaker makes one ``EVALSHA`` per guarded call, and on that path redis-py's
``execute_command`` cost more than our rules did (issue 17's profile at 100 tasks: encoding
every argument through a generator per call, observability hooks per command and per pool
checkout, a retry wrapper built per call). :class:`DirectScripts` packs the RESP array itself
(bytes pass through, the rest through the connection's own encoder) and uses the client's
pool and connection the way ``execute_command`` does: the pool's checkout, the connection's
``send_packed_command`` and ``read_response``, which connect on demand, honour
``health_check_interval`` and drop the connection on any error or cancellation, so no reply
is ever left for the next user of that connection.

The same goes for a script call with a staged value (``RedisBackend.run_script_staged``:
``SET key value PX ttl``, ``EVALSHA``, maybe ``WAIT``, one write): redis-py's pipeline cost a
100 KB checkpoint save more client time than the round trip's own socket work (issue 17's
profile), and copied the value twice (into the packed ``SET``, then into the joined write);
:meth:`DirectScripts.pack_staged` leaves the value a chunk of its own.

Retries are redis-py's: the call runs under the connection's own retry policy
(``connection.retry.call_with_retry``, the connection dropped between attempts), exactly as
``execute_command`` runs a command, so a client built with its retries off (what
``RedisBackend.from_url`` builds) never sees a script that may already have run (the reply was
lost, not the command) sent a second time, and one with retries resends on the errors its own
policy names, no more. Only a plain client qualifies: not Redis Cluster (commands are routed by
slot), not a single-connection client, and only a pool whose checkout can be called without a
command name.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors

__all__ = ["DirectScripts", "PackedKeys"]

_EVALSHA = b"$7\r\nEVALSHA\r\n"
_SET = b"*5\r\n$3\r\nSET\r\n"
_PX = b"$2\r\nPX\r\n"
_WAIT = b"*3\r\n$4\r\nWAIT\r\n"


class PackedKeys(list[bytes]):
    """Script keys with their RESP encoding kept beside them (:attr:`packed`).

    What a caller passes as ``keys`` when it sends the same thousands of keys again and again
    (``breaker_read.lua`` reads every breaker of a registry, two to four keys each): it packs
    each key once, keeps the pieces, and joins them per call, so :meth:`DirectScripts.pack`
    copies one block instead of encoding every key. It is a list of the keys all the same, for
    every path that is not ours (redis-py's ``evalsha``, Redis Cluster, a test's hook).
    """

    __slots__ = ("packed",)

    def __init__(self, keys: list[bytes], packed: bytes) -> None:
        super().__init__(keys)
        self.packed = packed
        """``keys`` as RESP bulk strings, back to back (:func:`pack_key` of each)."""


def pack_key(key: bytes) -> bytes:
    """``key`` as a RESP bulk string: one piece of :attr:`PackedKeys.packed`."""
    return b"$%d\r\n%s\r\n" % (len(key), key)


class DirectScripts:
    """Send ``EVALSHA sha numkeys keys... args...`` on a connection of ``pool``.

    Build with :meth:`for_client`, which returns ``None`` when the client does not qualify
    (see the module notes).
    """

    __slots__ = ("_encode", "_pool")

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        kwargs = getattr(pool, "connection_kwargs", {}) or {}
        encoding = kwargs.get("encoding", "utf-8")
        errors = kwargs.get("encoding_errors", "strict")

        def encode(value: object) -> bytes:
            # redis-py's Encoder.encode, for the types a script argument may have.
            if isinstance(value, bytes):
                return value
            if isinstance(value, bool):
                raise TypeError(f"a script argument cannot be a bool: {value!r}")
            if isinstance(value, int):
                return str(value).encode()
            if isinstance(value, float):
                return repr(value).encode()
            if isinstance(value, str):
                return value.encode(encoding, errors)
            raise TypeError(f"a script argument must be str, int, float or bytes: {value!r}")

        self._encode = encode

    @classmethod
    def for_client(cls, client: Any) -> DirectScripts | None:
        """A direct path for ``client``, or ``None`` where ``execute_command`` must be used."""
        if hasattr(client, "get_node_from_key"):  # Redis Cluster: routed by slot
            return None
        if getattr(client, "single_connection_client", False) or getattr(
            client, "connection", None
        ):
            return None
        pool = getattr(client, "connection_pool", None)
        checkout = getattr(pool, "get_connection", None)
        if pool is None or checkout is None or not hasattr(pool, "release"):
            return None
        try:
            parameters = inspect.signature(checkout).parameters
        except (TypeError, ValueError):  # pragma: no cover - a builtin or odd pool
            return None
        name = parameters.get("command_name")
        if name is not None and name.default is inspect.Parameter.empty:
            return None  # redis-py < 5.3 wants a command name: keep its own path
        return cls(pool)

    def pack(self, sha: str, keys: Sequence[str | bytes], args: Sequence[object]) -> bytes:
        """The RESP array of ``EVALSHA sha len(keys) *keys *args``."""
        encode = self._encode
        count = str(len(keys)).encode()
        out = [
            b"*%d\r\n" % (len(keys) + len(args) + 3),
            _EVALSHA,
            b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(sha), sha.encode(), len(count), count),
        ]
        append = out.append
        if isinstance(keys, PackedKeys):
            append(keys.packed)
            keys = ()
        for value in (*keys, *args):
            data = encode(value)
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
        return b"".join(out)

    def pack_staged(
        self,
        stage: tuple[str, bytes, int] | None,
        script: bytes,
        wait: tuple[int, int] | None,
    ) -> list[bytes]:
        """The chunks of one pipelined write: ``SET key value PX ttl_ms`` (``stage``), the
        packed ``script`` call, ``WAIT replicas timeout_ms`` (``wait``), in that order.

        The staged value is a chunk of its own (never copied into a bigger ``bytes`` here):
        a state of megabytes is joined once, by the transport, on its way to the socket.
        """
        encode = self._encode
        chunks: list[bytes] = []
        tail = script
        if stage is not None:
            key, value, ttl_ms = stage
            name = encode(key)
            px = b"%d" % ttl_ms
            chunks.append(b"%s$%d\r\n%s\r\n$%d\r\n" % (_SET, len(name), name, len(value)))
            chunks.append(value)
            tail = b"\r\n%s$%d\r\n%s\r\n%s" % (_PX, len(px), px, script)
        if wait is not None:
            replicas, timeout = b"%d" % wait[0], b"%d" % wait[1]
            tail += b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                _WAIT,
                len(replicas),
                replicas,
                len(timeout),
                timeout,
            )
        chunks.append(tail)
        return chunks

    async def call_many(self, chunks: Sequence[bytes], replies: int) -> list[Any]:
        """Send ``chunks`` (several commands, one write) and read ``replies`` replies.

        An error reply is returned in its place as redis-py's exception (``NoScriptError``
        for ``NOSCRIPT``), not raised: every reply is read, so none is left on the connection.
        Checkout, retries and dropping the connection on a failure are those of :meth:`call`.
        """
        pool = self._pool
        connection = await pool.get_connection()

        async def attempt() -> list[Any]:
            await connection.send_packed_command(chunks)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(await connection.read_response())
                except redis_errors.ResponseError as error:  # a reply, read in full
                    out.append(error)
            return out

        async def dropped(error: Exception) -> None:
            await connection.disconnect()

        try:
            retry = getattr(connection, "retry", None)
            if retry is None:
                return await attempt()
            replies_read: list[Any] = await retry.call_with_retry(attempt, dropped)
            return replies_read
        finally:
            await pool.release(connection)

    async def call(self, packed: bytes) -> Any:
        """Send ``packed`` on a pooled connection and return the parsed reply (a Redis error
        reply is raised as redis-py's exception, ``NOSCRIPT`` as ``NoScriptError``), under the
        connection's retry policy as ``execute_command`` would (see the module notes); a
        failed checkout is raised as it is (``execute_command`` does not retry it either)."""
        pool = self._pool
        connection = await pool.get_connection()

        async def attempt() -> Any:
            await connection.send_packed_command(packed)
            return await connection.read_response()

        async def dropped(error: Exception) -> None:
            await connection.disconnect()  # the next attempt connects afresh

        try:
            retry = getattr(connection, "retry", None)
            if retry is None:
                return await attempt()
            return await retry.call_with_retry(attempt, dropped)
        finally:
            await pool.release(connection)
