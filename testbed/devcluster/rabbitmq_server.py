"""TEST INFRASTRUCTURE — a real rabbitmq-server (Debian's) on free ports, with its own epmd.

Settings that work on these machines (see also docs/local-cluster.md):
- run `/usr/lib/rabbitmq/bin/rabbitmq-server` directly: the /usr/sbin wrapper
  switches to the `rabbitmq` user, and then every directory must be theirs;
- everything in our own directory (RABBITMQ_MNESIA_BASE, _LOG_BASE, _CONFIG_FILE,
  _ENABLED_PLUGINS_FILE, HOME for the Erlang cookie);
- an epmd of our own on a free loopback port (ERL_EPMD_PORT): the shared one on
  4369 would outlive the test bed, and a second broker must not meet the first;
- the Erlang distribution port pinned to loopback (`inet_dist_use_interface`),
  else it listens on every interface;
- `loopback_users = none`, so `guest` logs in from a pod (over the bridge gateway).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .procs import check_alive, free_port, spawn, stop, wait_for

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 60.0


class RabbitMQServer:
    """A throwaway broker; durable queues and persistent messages survive `restart()`."""

    def __init__(self, workdir: Path | None = None, host: str = "127.0.0.1", management: bool = True) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wpo-rabbitmq-"))
        self.host = host  # pods reach it on the node's bridge gateway; this machine on either address
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        # The management plugin's HTTP API (queues' unacknowledged counts), on loopback and the host.
        self.management = management
        self.management_port = free_port() if management else 0
        self.node = f"rabbit-{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    @property
    def local_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def management_url(self) -> str:
        """The management API (on `host` only: the operator reaches it there, as pods would)."""
        return f"http://guest:guest@{self.host}:{self.management_port}/"

    def _configure(self) -> dict[str, str]:
        for sub in ("mnesia", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        listeners = [f"listeners.tcp.1 = 127.0.0.1:{self.port}"]
        if self.host != "127.0.0.1":
            listeners.append(f"listeners.tcp.2 = {self.host}:{self.port}")
        settings = [*listeners, "loopback_users = none"]
        if self.management:
            # Queue statistics every 500 ms (the default 5 s): what the operator reads is that fresh.
            settings += [f"management.tcp.port = {self.management_port}", f"management.tcp.ip = {self.host}",
                         "collect_statistics_interval = 500"]  # fmt: skip
        (self.workdir / "rabbitmq.conf").write_text("\n".join([*settings, ""]))
        plugins = "[rabbitmq_management]" if self.management else "[]"
        (self.workdir / "enabled_plugins").write_text(f"{plugins}.\n")
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.workdir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
        }

    def start(self) -> RabbitMQServer:
        if not SERVER.exists():
            raise RuntimeError("rabbitmq-server not found: run hack/install-system-packages.sh")
        env = self._configure()
        if self.epmd is None or self.epmd.poll() is not None:
            epmd = shutil.which("epmd") or "epmd"
            self.epmd = spawn(
                [epmd, "-address", "127.0.0.1", "-port", str(self.epmd_port)], log_path=self.workdir / "epmd.log"
            )
        self.proc = spawn([str(SERVER)], log_path=self.workdir / "rabbitmq.log", env=env)
        wait_for(self._accepting, timeout=START_TIMEOUT, what=f"rabbitmq-server on port {self.port}")
        if self.management:
            wait_for(self._managing, timeout=START_TIMEOUT, what=f"its management API on port {self.management_port}")
        return self

    def new_vhost(self, name: str | None = None) -> RabbitMQVhost:
        """A virtual host of its own on this broker (queues, messages, exchanges apart from every
        other test's), with all rights for guest: a test's broker without a broker's start-up."""
        vhost = name or f"t-{uuid.uuid4().hex[:10]}"
        self._manage("PUT", f"/api/vhosts/{vhost}", {})
        self._manage("PUT", f"/api/permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        return RabbitMQVhost(self, vhost)

    def delete_vhost(self, vhost: str) -> None:
        self._manage("DELETE", f"/api/vhosts/{vhost}", None)

    def _manage(self, method: str, path: str, body: object) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://{self.host}:{self.management_port}{path}", data=data, method=method,
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                     "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10):
            pass

    def _managing(self) -> bool:
        with socket.create_connection((self.host, self.management_port), timeout=1):
            return True

    def _accepting(self) -> bool:
        assert self.proc is not None
        check_alive(self.proc, "rabbitmq-server", self.workdir / "rabbitmq.log")  # raises ProcessExited
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")  # the protocol header: a broker answers with connection.start
            return len(s.recv(8)) > 0

    def stop_broker(self) -> None:
        """Stop the broker only (its epmd stays for a restart)."""
        if self.proc is not None:
            stop(self.proc, grace=15.0)

    def stop(self) -> None:
        self.stop_broker()
        if self.epmd is not None:
            stop(self.epmd)

    def restart(self) -> None:
        """Stop and start on the same ports and data (durable queues and persistent messages kept)."""
        self.stop_broker()
        self.start()

    def __enter__(self) -> RabbitMQServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


@dataclass(frozen=True)
class RabbitMQVhost:
    """One test's part of a shared broker: the URLs of its virtual host."""

    server: RabbitMQServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url + self.name

    @property
    def local_url(self) -> str:
        return self.server.local_url + self.name

    @property
    def management_url(self) -> str:
        return self.server.management_url
