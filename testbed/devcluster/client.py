"""TEST INFRASTRUCTURE — a test's or benchmark's view of a pool's Redis:
submit executions as the platform does, read registrations and results, send
worker commands (the contract's keys and JSON, DESIGN §3)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from workerpool.contracts.names import worker_commands_channel, worker_key
from workerpool.contracts.wire import ExecutionResult, Registration, parse_registration
from workerpool.worker.queue import NOTIFY_CAP

from .waiting import wait_until

# Named deadlines.
RESULT = 20.0
CHANGE = 10.0

FUNCS = "workerpool.worker.functions"


class Client:
    """A test's view of Redis: submit, read registrations and results, send commands."""

    def __init__(self, url: str | redis.Redis, durable: bool = False) -> None:
        """`url`, or a client of one's own (a Sentinel master client); `durable`: each submit waits
        for a replica to hold it (WAIT), so a failover right after cannot lose it."""
        self.r = redis.Redis.from_url(url) if isinstance(url, str) else url
        self.durable = durable
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
        if self.durable:
            assert int(self.r.wait(1, 5000)) >= 1, f"no replica acknowledged the enqueue of {eid}"
        return eid

    def runs(self, worker_ids: list[str]) -> int:
        """Executions the workers finished, by their registrations' process counters (a rerun counts twice)."""
        regs = [self.registration(w) for w in worker_ids]
        return sum(p.executions_completed for r in regs if r is not None for p in r.info.processes)

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
