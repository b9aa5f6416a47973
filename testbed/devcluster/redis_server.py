"""TEST INFRASTRUCTURE — a real redis-server on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from .procs import ProcessExited, free_port, spawn, stop, wait_for


class RedisServer:
    """A throwaway redis-server: no persistence, its own directory, its own port."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wpo-redis-"))
        self.port = port or free_port()
        # Pods reach it on the node's bridge gateway; this machine on either address.
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run hack/install-system-packages.sh")
        self.proc = spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                *dict.fromkeys(("127.0.0.1", self.host)),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
            ],
            log_path=self.workdir / "redis.log",
        )
        wait_for(self._ping, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessExited(f"redis-server exited: see {self.workdir / 'redis.log'}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def restart(self) -> None:
        """Stop and start on the same port (data is lost: no persistence)."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
