"""Helpers for worker tests: a real `workerpool worker` process on a real Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster.cli_process import start_cli
from devcluster.client import CHANGE, RESULT, Client
from devcluster.waiting import wait_until
from workerpool.contracts.names import HEARTBEAT_CHANNEL
from workerpool.contracts.wire import Registration

# Named deadlines (RESULT and CHANGE: the client's).
START = 20.0
__all__ = ["CHANGE", "RESULT", "START", "Client", "HeartbeatTap", "WorkerProcess", "pids", "states", "wait_until"]


class WorkerProcess:
    """`workerpool worker` as a subprocess (its own process group, like a pod)."""

    def __init__(self, redis_url: str, log_dir: Path, worker_id: str | None = None, **env: Any) -> None:
        self.worker_id = worker_id or f"w-{uuid.uuid4().hex[:6]}"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "WORKER_ID": self.worker_id,
            "MIN_WORKERS": "2",
            "MAX_WORKERS": "4",
            "WORKER_HEARTBEAT_INTERVAL_SECONDS": "0.5",
            "REGISTRATION_TTL_SECONDS": "3",
            "GRACEFUL_SHUTDOWN_SECONDS": "1",
            "PROCESS_IDLE_SECONDS": "60",
            **{k: str(v) for k, v in env.items()},
        }
        self.log = log_dir / f"{self.worker_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = start_cli("worker", self.env, self.log)
        return self

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def kill_group(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def states(reg: Registration) -> list[str]:
    return [p.state for p in reg.info.processes]


class HeartbeatTap:
    """Every heartbeat one worker publishes, read from the channel as it goes by (the
    registration hash keeps only the last one: a sample of it misses what came between)."""

    def __init__(self, client: Client, worker_id: str) -> None:
        self.worker_id = worker_id
        self.pubsub = client.r.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(HEARTBEAT_CHANNEL)
        self.pubsub.get_message(timeout=1)  # the subscription's confirmation
        self.seen: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Everything published so far (waits briefly for the next message)."""
        while (msg := self.pubsub.get_message(timeout=0.1)) is not None:
            data = json.loads(msg["data"])
            if data.get("type") == "worker_heartbeat" and data.get("worker_id") == self.worker_id:
                self.seen.append(data)
        return self.seen

    def until(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = CHANGE) -> dict[str, Any]:
        """The first heartbeat from now on for which `predicate` holds."""
        start = len(self.read())
        return wait_until(
            lambda: next((h for h in self.read()[start:] if predicate(h)), None), timeout=timeout, what=what
        )

    def close(self) -> None:
        self.pubsub.close()


def pids(heartbeat: dict[str, Any]) -> list[int]:
    return [p["pid"] for p in heartbeat["processes"]]
