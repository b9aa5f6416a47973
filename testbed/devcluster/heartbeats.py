"""Synthetic worker heartbeats, as a worker publishes them (for the hub test and the benchmarks)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from workerpool.contracts.names import worker_key
from workerpool.contracts.wire import WorkerHeartbeat, registration_fields, to_wire


def heartbeat(
    pod: str,
    busy: bool,
    started: dt.datetime,
    pool: str = "bench",
    namespace: str = "bench",
    execution: tuple[str, dt.datetime] | None = None,
) -> WorkerHeartbeat:
    """`execution`: the (id, start) a busy worker runs (default: a new id, started now)."""
    now = dt.datetime.now(dt.UTC)
    proc: dict[str, Any] = {
        "pid": 4242,
        "process_id": "process-1",
        "state": "busy" if busy else "idle",
        "memory_mb": 50.0,
        "uptime_seconds": (now - started).total_seconds(),
        "executions_completed": 1,
        "execution": None,
    }
    if busy:
        eid, began = execution or (uuid.uuid4().hex, now)
        elapsed = max(0.0, (now - began).total_seconds())
        proc["execution"] = {"execution_id": eid, "started_at": began.isoformat(), "elapsed_seconds": elapsed}
    return WorkerHeartbeat.model_validate(
        {
            "type": "worker_heartbeat",
            "worker_id": pod,
            "timestamp": now.isoformat(),
            "started_at": started.isoformat(),
            "hostname": pod,
            "min_workers": 1,
            "max_workers": 1,
            "pool_size": 1,
            "idle_count": 0 if busy else 1,
            "busy_count": 1 if busy else 0,
            "processes": [proc],
            "pool": pool,
            "namespace": namespace,
        }
    )


def heartbeat_payload(
    pod: str,
    busy: bool,
    started: dt.datetime,
    pool: str,
    namespace: str,
    execution: tuple[str, dt.datetime] | None = None,
) -> tuple[str, dict[str, str], str]:
    """(registration key, its fields, the JSON to publish): what a worker writes per heartbeat."""
    hb = heartbeat(pod, busy, started, pool, namespace, execution)
    payload = json.dumps(to_wire(hb))
    return worker_key(pod), registration_fields(hb, heartbeat_json=payload), payload
