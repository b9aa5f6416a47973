"""TEST INFRASTRUCTURE — Redis as production runs it: a primary, a replica and three
Sentinels (Debian's redis-server in sentinel mode), on `host` (the bridge gateway,
so pods reach them, and Sentinel announces that address, not loopback), optionally
with TLS from the test bed's CA and with the contract's ACL users
(workerpool.contracts.redis_acl) instead of the default user.

Pitfalls met (docs/local-cluster.md): a Sentinel needs a writable config file
(it rewrites it); `sentinel announce-ip` and `replica-announce-ip` make every
address it hands out the gateway's; a node that comes back after a failover
starts as an empty primary until Sentinel turns it into a replica (the clients
never see it: they ask Sentinel); with `user default off` the Sentinels need
their own data-node user (`sentinel auth-user`) and the replicas theirs
(`masteruser`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from workerpool.contracts.redis_acl import ROLES, SENTINEL_CLIENT

from .certs import RedisTls
from .procs import ProcessExited, free_port, spawn, stop, wait_for
from .waiting import wait_until

MASTER = "wpo-primary"
# How long a primary may be silent before a Sentinel calls it down. 1 s made Sentinel call a
# just-promoted primary down now and then, and fail over again (to an empty replica).
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 6000
# Test-bed users beside the contract's: the Sentinels' own on the data nodes, the
# replication link's, and an administrator for the tests' own reads and writes.
SENTINEL_USER = "wpo-sentinel"
SENTINEL_RULES = (
    "allchannels -@all +multi +slaveof +replicaof +ping +exec +subscribe +config|rewrite +role +publish"
    " +info +client|setname +client|kill +script|kill"
)
REPLICA_USER = "wpo-replica"
REPLICA_RULES = "-@all +psync +replconf +ping"
ADMIN_USER = "wpo-admin"
ADMIN_RULES = "~* &* +@all"


@dataclass
class Node:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class SentinelSet:
    """A primary, a replica, three Sentinels: started, failed over on demand, torn down."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wpo-sentinel-")))
    host: str = "127.0.0.1"
    tls: RedisTls | None = None
    acl: bool = False

    def __post_init__(self) -> None:
        self.nodes = [Node(free_port(), self.workdir / f"node-{i}") for i in range(2)]
        self.sentinels = [Node(free_port(), self.workdir / f"sentinel-{i}") for i in range(3)]
        # One password per user (role names from the contract; the test bed's own users).
        users = [r.user for r in ROLES] + [SENTINEL_USER, REPLICA_USER, ADMIN_USER]
        self.passwords = {user: secrets.token_hex(12) for user in users}

    # --- URLs and clients --------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "rediss+sentinel" if self.tls else "redis+sentinel"

    def url(self, user: str | None = ADMIN_USER) -> str:
        """The Sentinel URL (DESIGN §3) as `user` (an ACL role's user, or the admin); None: no credentials."""
        creds = f"{user}:{self.passwords[user]}@" if self.acl and user else ""
        hosts = ",".join(f"{self.host}:{s.port}" for s in self.sentinels)
        return f"{self.scheme}://{creds}{hosts}/{MASTER}/0"

    def _tls_kwargs(self) -> dict[str, Any]:  # redis-py's keyword arguments, of mixed types
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.tls.ca), "ssl_cert_reqs": "required"}

    def _auth_kwargs(self) -> dict[str, Any]:
        return {"username": ADMIN_USER, "password": self.passwords[ADMIN_USER]} if self.acl else {}

    def node_client(self, node: Node) -> redis.Redis:
        """A direct client of one data node, as the administrator."""
        return redis.Redis(self.host, node.port, socket_timeout=2, **self._tls_kwargs(), **self._auth_kwargs())

    def master_client(self) -> redis.Redis:
        """The administrator's client of whichever node is primary (asks the Sentinels on each connect)."""
        from redis.sentinel import Sentinel

        kwargs: dict[str, Any] = {"socket_timeout": 2, **self._tls_kwargs()}
        hosts = [(self.host, s.port) for s in self.sentinels]
        sentinel = Sentinel(hosts, sentinel_kwargs=kwargs, **kwargs)
        master: redis.Redis = sentinel.master_for(MASTER, **self._auth_kwargs())
        return master

    def sentinel_client(self, sentinel: Node) -> redis.Redis:
        return redis.Redis(self.host, sentinel.port, socket_timeout=2, **self._tls_kwargs())

    def master_port(self) -> int | None:
        """The primary's port as the Sentinels' majority names it now (None: no majority)."""
        seen: dict[int, int] = {}
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            try:
                addr = self.sentinel_client(sentinel).sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            if isinstance(addr, tuple | list):
                seen[int(addr[1])] = seen.get(int(addr[1]), 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best is not None and best[1] >= 2 else None

    def primary(self) -> Node:
        port = wait_until(self.master_port, timeout=30, what="the Sentinels to agree on a primary")
        return next(n for n in self.nodes if n.port == port)

    def replica(self) -> Node:
        primary = self.primary()
        return next(n for n in self.nodes if n is not primary)

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> SentinelSet:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: run hack/install-system-packages.sh")
        primary, replica = self.nodes
        self._start_node(primary, replica_of=None)
        self._start_node(replica, replica_of=primary.port)
        wait_until(lambda: self._linked(replica), timeout=20, what="the replica to sync with the primary")
        for sentinel in self.sentinels:
            self._start_sentinel(sentinel, primary.port)
        wait_until(self._sentinels_agree, timeout=30, what="three Sentinels that know each other and the replica")
        return self

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            if node.proc is not None:
                stop(node.proc)

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def pids(self) -> list[int]:
        return [n.proc.pid for n in [*self.nodes, *self.sentinels] if n.alive and n.proc is not None]

    def add_user(self, user: str, password: str, rules: str) -> None:
        """One more ACL user on every data node (ACL SETUSER is not replicated) and every Sentinel."""
        asks = [f"+{c}" for c in SENTINEL_CLIENT]
        for node in self.nodes:
            if node.alive:
                _setuser(self.node_client(node), user, password, rules.split())
        for sentinel in self.sentinels:
            _setuser(self.sentinel_client(sentinel), user, password, ["-@all", *asks])

    # --- failover ------------------------------------------------------------------------------

    def kill_primary(self) -> Node:
        """SIGKILL the primary (no goodbye to anyone); returns it."""
        node = self.primary()
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=10)
        return node

    def wait_promoted(self, old: Node, timeout: float = 30) -> tuple[Node, float]:
        """The node the Sentinels promoted in place of `old`, and when (time.time()) they agreed."""
        port = wait_until(
            lambda: p if (p := self.master_port()) not in (None, old.port) else None,
            timeout=timeout,
            what="the Sentinels to promote the replica",
            interval=0.02,
        )
        promoted_at = time.time()
        node = next(n for n in self.nodes if n.port == port)
        wait_until(lambda: self._role(node) == "master", timeout=timeout, what="the promoted node to be primary")
        return node, promoted_at

    def rejoin(self, node: Node, timeout: float = 30, replica_of: Node | None = None) -> None:
        """Start a killed node again (empty: no persistence) and wait until it is a synced replica:
        as it was (a primary Sentinel has to demote, about 10 s), or configured as `replica_of`'s."""
        self._start_node(node, replica_of=replica_of.port if replica_of is not None else None)
        wait_until(lambda: self._linked(node), timeout=timeout, what="the old primary to rejoin as a replica")

    def _role(self, node: Node) -> str | None:
        try:
            role = self.node_client(node).role()
        except redis.RedisError:
            return None
        return (role[0].decode() if isinstance(role[0], bytes) else str(role[0])) if role else None

    def _linked(self, node: Node) -> bool:
        try:
            info = self.node_client(node).info("replication")
        except redis.RedisError:
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            try:
                state = self.sentinel_client(sentinel).sentinel_master(MASTER)
            except redis.RedisError:
                return False
            assert isinstance(state, dict)
            if int(state.get("num-other-sentinels", 0)) < 2 or int(state.get("num-slaves", 0)) < 1:
                return False
        return True

    # --- configuration ----------------------------------------------------------------------------

    def _tls_lines(self, port: int) -> list[str]:
        if self.tls is None:
            return [f"port {port}"]
        return [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {self.tls.cert}",
            f"tls-key-file {self.tls.key}",
            f"tls-ca-cert-file {self.tls.ca}",
            "tls-auth-clients no",
            "tls-replication yes",
        ]

    def _acl_lines(self) -> list[str]:
        if not self.acl:
            return []
        pw = self.passwords
        lines = ["user default off"]
        lines += [f"user {r.user} on >{pw[r.user]} {r.rules()}" for r in ROLES]
        lines += [
            f"user {SENTINEL_USER} on >{pw[SENTINEL_USER]} {SENTINEL_RULES}",
            f"user {REPLICA_USER} on >{pw[REPLICA_USER]} {REPLICA_RULES}",
            f"user {ADMIN_USER} on >{pw[ADMIN_USER]} {ADMIN_RULES}",
            f"masteruser {REPLICA_USER}",
            f"masterauth {pw[REPLICA_USER]}",
        ]
        return lines

    def _start_node(self, node: Node, replica_of: int | None) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            *self._tls_lines(node.port),
            f"bind {' '.join(dict.fromkeys(('127.0.0.1', self.host)))}",
            "protected-mode no",
            'save ""',
            "appendonly no",
            "repl-diskless-sync-delay 0",  # a rejoining replica syncs at once (not 5 s later)
            f"dir {node.directory}",
            f"replica-announce-ip {self.host}",
            *self._acl_lines(),
        ]
        if replica_of is not None:
            lines.append(f"replicaof {self.host} {replica_of}")
        conf = node.directory / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        node.proc = spawn(["redis-server", str(conf)], log_path=node.directory / "redis.log")
        wait_for(lambda: self._answers(node), timeout=10, what=f"redis-server on port {node.port}")

    def _start_sentinel(self, sentinel: Node, primary_port: int) -> None:
        sentinel.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            *self._tls_lines(sentinel.port),
            f"bind {' '.join(dict.fromkeys(('127.0.0.1', self.host)))}",
            "protected-mode no",
            f"dir {sentinel.directory}",
            f"sentinel announce-ip {self.host}",
            f"sentinel monitor {MASTER} {self.host} {primary_port} 2",
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER} 1",
        ]
        if self.acl:
            pw = self.passwords
            lines.append(f"sentinel auth-user {MASTER} {SENTINEL_USER}")
            lines.append(f"sentinel auth-pass {MASTER} {pw[SENTINEL_USER]}")
            # The contract's users ask Sentinel for the primary with their own credentials (DESIGN §3).
            rules = " ".join(f"+{c}" for c in SENTINEL_CLIENT)
            lines += [f"user {r.user} on >{pw[r.user]} -@all {rules}" for r in ROLES]
            lines.append(f"user {ADMIN_USER} on >{pw[ADMIN_USER]} -@all {rules}")
        conf = sentinel.directory / "sentinel.conf"  # rewritten by Sentinel: it must be writable
        conf.write_text("\n".join(lines) + "\n")
        sentinel.proc = spawn(["redis-server", str(conf), "--sentinel"], log_path=sentinel.directory / "sentinel.log")
        wait_for(lambda: self._answers(sentinel), timeout=10, what=f"redis-sentinel on port {sentinel.port}")

    def _answers(self, node: Node) -> bool:
        if node.proc is not None and node.proc.poll() is not None:
            raise ProcessExited(f"redis exited: see {node.directory}")
        with socket.create_connection(("127.0.0.1", node.port), timeout=1):
            return True


def _setuser(client: redis.Redis, user: str, password: str, rules: list[str]) -> None:
    """ACL SETUSER with raw rules (redis-py's acl_setuser takes them apart; these are the docs' own)."""
    client.execute_command("ACL", "SETUSER", user, "on", f">{password}", *rules)  # type: ignore[no-untyped-call]
