"""Start and stop a 3-master Redis Cluster on loopback (for tests/backends/test_cluster.py).

Each node is a :class:`tests.servers.RedisServer` (own temp dir, no persistence, stopped by
PID) started with ``--cluster-enabled yes``; ``redis-cli --cluster create`` then splits the
16384 slots between them. A node also listens on its *cluster bus* port, ``port + 10000``, so
ports are picked with that one free too.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass, field

from .helpers import until_sync
from .servers import RedisServer, free_port, required_tool

BUS_OFFSET = 10_000


def redis_cli() -> str:
    return required_tool("redis-cli", "redis-server")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (``+10000``) is free as well."""
    for _ in range(200):
        port = free_port()
        bus = port + BUS_OFFSET
        if bus < 65536 and port not in taken and bus not in taken and _bindable(bus):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisClusterNodes:
    """Three master nodes forming one cluster; ``url`` points at the first."""

    size: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> RedisClusterNodes:
        cli = redis_cli()
        taken: set[int] = set()
        try:
            for _ in range(self.size):
                port = free_cluster_port(taken)
                taken |= {port, port + BUS_OFFSET}
                node = RedisServer(
                    port,
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
                self.nodes.append(node)
                node.start()
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self._wait_ok(cli)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _wait_ok(self, cli: str) -> None:
        states: list[str] = []

        def all_ok() -> bool:
            nonlocal states
            states = [
                subprocess.run(
                    [cli, "-h", "127.0.0.1", "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                for port in self.ports
            ]
            return all("cluster_state:ok" in info for info in states)

        try:
            until_sync(all_ok, within=20, interval=0.05, what="cluster_state:ok on every node")
        except AssertionError:
            raise RuntimeError(f"cluster not ok after 20 s: {states}") from None

    def cleanup(self) -> None:
        """Stop every node by PID and remove its directory."""
        for node in self.nodes:
            node.cleanup()
