"""A real Sentinel deployment on loopback: one master, one replica, three sentinels.

Every process is started here on free loopback ports and stopped by PID (``RedisServer`` from
``tests/servers.py`` for the data nodes; the sentinels are ``redis-sentinel`` with a config
file of their own, which Sentinel insists on rewriting). Sentinel's timers are shortened
(``down-after-milliseconds`` 1 s, ``failover-timeout`` 3 s) so a failover takes about a
second. Waits are on conditions (``ROLE``, ``SENTINEL`` replies), never fixed sleeps.

Used by the failover tests and by ``benchmarks/bench_failover.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .helpers import until_sync
from .servers import RedisServer, free_port, required_tool, stop_process

SERVICE = "mymaster"


def sentinel_binary() -> str:
    return required_tool("redis-sentinel")


def wait_for(condition: Callable[[], object], what: str, within: float = 30.0) -> None:
    """Poll ``condition`` every 20 ms (a server not up yet counts as "not yet"); fail after
    ``within`` seconds (a ceiling, not a claim)."""
    until_sync(
        condition,
        within=within,
        interval=0.02,
        what=f"sentinel fixture: {what}",
        ignore=(redis.RedisError, OSError),
    )


@dataclass
class SentinelProcess:
    port: int
    monitored_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        config = self.workdir / f"sentinel-{self.port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    "daemonize no",
                    f"dir {self.workdir}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.monitored_port} 2",
                    f"sentinel down-after-milliseconds {SERVICE} 1000",
                    f"sentinel failover-timeout {SERVICE} 3000",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )
        self.process = subprocess.Popen(
            [sentinel_binary(), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        wait_for(lambda: self.client().ping(), f"sentinel {self.port} answering PING", 10)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class SentinelDeployment:
    """Master + replica + three sentinels; ``failover()`` swaps the two data nodes' roles."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aioresil-snt-")))
    nodes: list[RedisServer] = field(default_factory=list)
    sentinels: list[SentinelProcess] = field(default_factory=list)

    def start(self) -> SentinelDeployment:
        try:
            master = RedisServer(free_port()).start()
            self.nodes.append(master)
            replica = RedisServer(
                free_port(), ["--replicaof", "127.0.0.1", str(master.port)]
            ).start()
            self.nodes.append(replica)
            self._wait_replicated(master.port, replica.port)
            for _ in range(3):
                self.sentinels.append(
                    SentinelProcess(free_port(), master.port, self.workdir).start()
                )
            self._wait_sentinels_ready(master.port, replica.port)
        except BaseException:
            self.cleanup()
            raise
        return self

    # ------------------------------------------------------------------ views

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it."""
        reply = self.sentinels[0].client().sentinel_get_master_addr_by_name(SERVICE)
        return int(reply[1])

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)

    # ------------------------------------------------------------------ waits

    def _wait_replicated(self, master_port: int, replica_port: int) -> None:
        def linked() -> bool:
            info = self.client(replica_port).info("replication")
            role = self.client(master_port).info("replication")
            return (
                info.get("master_link_status") == "up"
                and info.get("master_port") == master_port
                and role.get("connected_slaves", 0) >= 1
            )

        wait_for(linked, f"replica {replica_port} linked to {master_port}")

    def _wait_sentinels_ready(self, master_port: int, replica_port: int) -> None:
        def ready() -> bool:
            for sentinel in self.sentinels:
                client = sentinel.client()
                addr = client.sentinel_get_master_addr_by_name(SERVICE)
                if addr is None or int(addr[1]) != master_port:
                    return False
                replicas = client.sentinel_slaves(SERVICE)
                if not any(
                    int(r["port"]) == replica_port
                    and not r.get("is_sdown")
                    and not r.get("is_odown")
                    and r.get("master-link-status") == "ok"
                    for r in replicas
                ):
                    return False
            return True

        wait_for(ready, "every sentinel sees the master and a healthy replica")

    # ------------------------------------------------------------------ actions

    def request_failover(self) -> int:
        """Send ``SENTINEL FAILOVER`` (retried while the sentinel is not ready); return the old
        master's port. Returns as soon as a sentinel accepted it: the switch is still running."""
        old = self.master_port()
        new = next(n.port for n in self.nodes if n.port != old)
        self._wait_sentinels_ready(old, new)
        client = self.sentinels[0].client()

        def accepted() -> bool:
            try:
                return bool(client.sentinel_failover(SERVICE))
            except redis.ResponseError as exc:  # NOGOODSLAVE / INPROG: ask again
                if "NOGOODSLAVE" in str(exc) or "INPROG" in str(exc):
                    return False
                raise

        wait_for(accepted, "SENTINEL FAILOVER accepted")
        return old

    def wait_failover_done(self, old: int) -> int:
        """Wait until every sentinel names the new master and the old one replicates it."""
        new = next(n.port for n in self.nodes if n.port != old)

        def switched() -> bool:
            for sentinel in self.sentinels:
                addr = sentinel.client().sentinel_get_master_addr_by_name(SERVICE)
                if addr is None or int(addr[1]) != new:
                    return False
            return self.client(new).info("replication").get("role") == "master"

        wait_for(switched, "every sentinel names the new master")
        self._wait_replicated(new, old)
        self._wait_sentinels_ready(new, old)
        return new

    def failover(self) -> int:
        """A whole ``SENTINEL FAILOVER``; returns the new master's port."""
        return self.wait_failover_done(self.request_failover())

    def cleanup(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)
