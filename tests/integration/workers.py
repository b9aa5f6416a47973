"""Helpers for worker tests: a real `workerpool worker` process on a real Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from devcluster.cli_process import start_cli
from devcluster.waiting import wait_until
from workerpool.contracts.names import worker_commands_channel, worker_key
from workerpool.contracts.wire import ExecutionResult, Registration, parse_registration
from workerpool.worker.queue import NOTIFY_CAP

T = TypeVar("T")

# Named deadlines.
START = 20.0
RESULT = 20.0
CHANGE = 10.0

FUNCS = "workerpool.worker.functions"


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


class Client:
    """A test's view of Redis: submit, read registrations and results, send commands."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)
        self.queue = "bifrost:queue:pending"

    def submit(
        self,
        function: str,
        parameters: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        execution_id: str | None = None,
        context: bool = True,
    ) -> str:
        eid = execution_id or f"e-{uuid.uuid4().hex[:10]}"
        ctx: dict[str, Any] = {"function": f"{FUNCS}:{function}", "parameters": parameters or {}}
        if timeout is not None:
            ctx["timeout_seconds"] = timeout
        with self.r.pipeline(transaction=True) as p:
            if context:
                p.set(f"bifrost:exec:{eid}:context", json.dumps(ctx))
            p.zadd(self.queue, {eid: time.time()})
            p.lpush(f"{self.queue}:notify", "1")
            p.ltrim(f"{self.queue}:notify", 0, NOTIFY_CAP - 1)
            p.execute()
        return eid

    def result(self, eid: str) -> ExecutionResult | None:
        raw = self.r.get(f"bifrost:exec:{eid}:result")
        return ExecutionResult.model_validate_json(raw) if raw else None

    def wait_result(self, eid: str, timeout: float = RESULT) -> ExecutionResult:
        return wait_until(lambda: self.result(eid), timeout=timeout, what=f"the result of {eid}")

    def registration(self, worker_id: str) -> Registration | None:
        fields = self.r.hgetall(worker_key(worker_id))
        return parse_registration(worker_id, fields) if fields else None

    def wait_registration(
        self, worker_id: str, check: Callable[[Registration], bool], what: str, timeout: float = CHANGE
    ) -> Registration:
        def probe() -> Registration | None:
            reg = self.registration(worker_id)
            return reg if reg is not None and check(reg) else None

        return wait_until(probe, timeout=timeout, what=what)

    def recycle(self, worker_id: str, pid: int | None) -> int:
        return int(self.r.publish(worker_commands_channel(worker_id), json.dumps({"type": "recycle", "pid": pid})))


def states(reg: Registration) -> list[str]:
    return [p.state for p in reg.info.processes]
