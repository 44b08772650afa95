"""Real Redis servers on free ports: one `redis-server`, a Redis Cluster, a master with Sentinel.

`RedisServer` is one server, which a test can stop (or kill) and start again on the same port and
dir. `RedisServer(aof=True)` persists every write before answering it (`appendonly yes`,
`appendfsync always`), as production should: a restart after `kill()` loses nothing.
`RedisClusterServers` is 3 masters and 3 replicas made with `redis-cli --cluster create`;
`RedisSentinelSet` is a master, its replica and 3 sentinels. Both can kill their master and
start it again; their timeouts are short (a failover within ~2 s) so tests stay quick.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.cluster import RedisCluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_cluster_ports: set[int] = set()


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too: node ports from 20000-29999, so no
    node's port is another's bus port (30000-39999), and none handed out twice in this process."""
    for _ in range(1000):
        port = random.randrange(20000, 30000)
        if port in _cluster_ports:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        _cluster_ports.add(port)
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    def __init__(self, *, aof: bool = False, args: Sequence[str] = (), port: int | None = None) -> None:
        self.aof = aof
        self.args = list(args)  # more `--name value` options (cluster mode, replicaof)
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="itv-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.aof else "no",
                "--appendfsync",
                "always",
                "--dir",
                self.dir,
                "--maxmemory-policy",
                "noeviction",
                # A replica's first sync starts at once (the default waits 5 s for more replicas).
                "--repl-diskless-sync-delay",
                "0",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from exc
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown save, only what the AOF already holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


def _wait(check, what: str, timeout: float = 20.0) -> None:
    """Poll `check()` until it is true; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.exceptions.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} after {timeout} s")
        time.sleep(0.1)


def _replicas_online(replication: dict) -> bool:
    """Every replica a master lists is online (past its first sync: it acknowledges writes)."""
    return all(
        v.get("state") == "online" for k, v in replication.items() if k.startswith("slave") and isinstance(v, dict)
    )


def info(port: int, section: str) -> dict:
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)
    try:
        return client.info(section)
    finally:
        client.close()


class ClusterTestClient(RedisCluster):
    """A RedisCluster client for tests: `keys` and `flushall` cover every master (redis-py asks one node for KEYS)."""

    def keys(self, pattern="*", **kwargs):
        found = self.execute_command("KEYS", pattern, target_nodes=RedisCluster.PRIMARIES, **kwargs)
        return [key for keys in found.values() for key in keys] if isinstance(found, dict) else found

    def flushall(self, asynchronous=False, **kwargs):
        return self.execute_command("FLUSHALL", target_nodes=RedisCluster.PRIMARIES, **kwargs)


# A node is declared failed after this, and its replica promoted about a second later.
CLUSTER_NODE_TIMEOUT_MS = 1000


class RedisClusterServers:
    """A Redis Cluster of `masters` masters, each with one replica, on free ports of 127.0.0.1.

    `url` names one node (as REDIS_URL does); `client()` is a RedisCluster client of it.
    `kill_master(i)` SIGKILLs the i-th current master; `restart(server)` starts it again with its
    nodes.conf, so it rejoins the cluster as a replica of the node that took over.
    """

    def __init__(self, masters: int = 3) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        self.cli = cli
        self.servers = [
            # No AOF: a node's copy survives in its replica, and an fsync stall on a busy CI disk would
            # last longer than the node timeout and fail a master over in the middle of a test.
            RedisServer(
                aof=False,
                port=free_cluster_port(),
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(CLUSTER_NODE_TIMEOUT_MS),
                    # A replica may take over however long it was cut off (a test kills masters at will).
                    "--cluster-replica-validity-factor",
                    "0",
                ],
            )
            for _ in range(masters * 2)
        ]
        self.masters = masters

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.servers[0].port}"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_healthy()

    def running(self) -> list[RedisServer]:
        return [server for server in self.servers if server.process is not None]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every running node says the cluster is ok, knows `masters` masters, and sees every replica's link up."""

        def healthy() -> bool:
            for server in self.running():
                if info(server.port, "cluster").get("cluster_enabled") != 1:
                    return False
                client = server.client()
                try:
                    state = client.execute_command("CLUSTER", "INFO")
                    if b"cluster_state:ok" not in (state if isinstance(state, bytes) else str(state).encode()):
                        return False
                    nodes = client.execute_command("CLUSTER", "NODES")
                finally:
                    client.close()
                text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
                flags = [line.split()[2] for line in text.splitlines() if line.strip()]
                if any("fail" in f or "handshake" in f or "noaddr" in f for f in flags):
                    return False
                if sum("master" in f for f in flags) != self.masters:
                    return False
            for server in self.running():
                replication = info(server.port, "replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
                if not _replicas_online(replication):
                    return False
            return True

        _wait(healthy, "the cluster is not ok", timeout)

    def master_servers(self) -> list[RedisServer]:
        return [s for s in self.running() if info(s.port, "replication")["role"] == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The server that serves `key`'s slot now."""
        client = self.client()
        try:
            node = client.get_node_from_key(key)
        finally:
            client.close()
        return next(s for s in self.servers if s.port == node.port)

    def kill_master(self, server: RedisServer | None = None) -> RedisServer:
        """SIGKILL a master (the first, or `server`): its replica takes over after the node timeout."""
        server = server or self.master_servers()[0]
        server.kill()
        return server

    def restart(self, server: RedisServer) -> None:
        """Start a killed node again: it rejoins as a replica of the node that took its slots."""
        server.start()
        self.wait_healthy()

    def heal(self) -> None:
        """Every node running again and the cluster ok (after a test that killed one)."""
        for server in self.servers:
            if server.process is None:
                server.start()
        self.wait_healthy()

    def client(self, **options) -> ClusterTestClient:
        return ClusterTestClient(url=self.url, socket_timeout=5, **options)

    def flushall(self) -> None:
        """Empty every master (its replicas follow)."""
        for server in self.master_servers():
            client = server.client()
            try:
                client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


SENTINEL_MASTER = "itv"  # the name the test sentinels monitor
SENTINEL_DOWN_AFTER_MS = 1000


class RedisSentinelSet:
    """A master, its replica, and 3 sentinels monitoring it as `SENTINEL_MASTER` (quorum 2).

    `env()` are the service's variables for it; `kill_master()` SIGKILLs the current master, and the
    sentinels promote the replica within a few seconds; `restart(server)` starts it again, and the
    sentinels make it a replica of the new master.
    """

    def __init__(self) -> None:
        self.master = RedisServer(aof=True)
        self.replica = RedisServer(aof=True, args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.servers = [self.master, self.replica]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinel_dirs = [tempfile.mkdtemp(prefix="itv-sentinel-") for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def sentinel_list(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def env(self) -> dict[str, str]:
        # The host of REDIS_URL is not used with Sentinel; its database and password are.
        return {
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "REDIS_SENTINELS": self.sentinel_list,
            "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
        }

    def start(self) -> None:
        binary = self.master.binary
        self.master.start()
        self.replica.start()
        for port, directory in zip(self.sentinel_ports, self.sentinel_dirs):
            conf = Path(directory) / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} {SENTINEL_DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 3000\n"
                f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        self.wait_healthy()

    def current_master(self) -> RedisServer:
        """The server the sentinels name as master now."""
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=2)
        try:
            _host, port = client.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
        finally:
            client.close()
        return next(s for s in self.servers if s.port == int(port))

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every sentinel agrees on a running master, which has its replica connected, and knows the others."""

        def healthy() -> bool:
            ports = set()
            for port in self.sentinel_ports:
                client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)
                try:
                    state = client.sentinel_master(SENTINEL_MASTER)
                finally:
                    client.close()
                if "s_down" in state["flags"] or "o_down" in state["flags"] or state["num-other-sentinels"] < 2:
                    return False
                if state["num-slaves"] < 1:
                    return False
                ports.add(int(state["port"]))
            if len(ports) != 1:
                return False
            master = next((s for s in self.servers if s.port in ports and s.process is not None), None)
            if master is None:
                return False
            replication = info(master.port, "replication")
            if replication["role"] != "master" or replication["connected_slaves"] != len(self.running()) - 1:
                return False
            if not _replicas_online(replication):
                return False
            return all(
                info(s.port, "replication").get("master_link_status") == "up" for s in self.running() if s is not master
            )

        _wait(healthy, "the sentinels do not agree on a healthy master", timeout)

    def running(self) -> list[RedisServer]:
        return [server for server in self.servers if server.process is not None]

    def kill_master(self) -> RedisServer:
        server = self.current_master()
        server.kill()
        return server

    def restart(self, server: RedisServer) -> None:
        # Started as a replica of the new master at once (the sentinels would turn it into one, slower).
        server.args = ["--replicaof", "127.0.0.1", str(self.current_master().port)]
        server.start()
        self.wait_healthy()

    def heal(self) -> None:
        for server in self.servers:
            if server.process is None:
                self.restart(server)
        self.wait_healthy()

    def client(self) -> redis.Redis:
        return self.current_master().client()

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
            process.wait(timeout=10)
        self.sentinels = []
        for server in self.servers:
            server.stop()
