"""The seed's wire (DESIGN §2-3): the project's reference worker.

Registrations `worker:{id}` (counts as strings, the last heartbeat in a field),
heartbeats on `bifrost:workers:heartbeat`, recycle as `{"type":"recycle"}` on
`worker:{id}:commands`, and the retire handshake (a retiring mark the worker
checks before each claim, the set of executions it holds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..contracts import names
from ..contracts.report import WorkerReport, process_report
from ..contracts.resource import WorkerPoolSpec
from ..contracts.wire import (
    RecycleCommand,
    Registration,
    WorkerHeartbeat,
    WorkerInfo,
    parse_heartbeat,
    parse_registration,
    to_wire,
)
from .base import DEFAULT_CONTAINER_NAME, Heard, Heartbeat, PoolRef, RetireHandshake, env_value, fresh_window

WORKER_COMMAND = ["workerpool", "worker"]


def report_of(info: WorkerInfo, pool: str | None, namespace: str | None, reported_at: Any) -> WorkerReport:
    return WorkerReport(
        worker_id=info.worker_id,
        started_at=info.started_at,
        hostname=info.hostname,
        pool_size=info.pool_size,
        idle_count=info.idle_count,
        busy_count=info.busy_count,
        processes=tuple(process_report(p) for p in info.processes),
        min_processes=info.min_workers,
        max_processes=info.max_workers,
        pool=pool,
        namespace=namespace,
        reported_at=reported_at,
    )


def heartbeat_report(hb: WorkerHeartbeat) -> WorkerReport:
    return report_of(hb, hb.pool, hb.namespace, hb.timestamp)


def registration_report(reg: Registration) -> WorkerReport:
    return report_of(reg.info, reg.pool, reg.namespace, reg.heartbeat_at)


class SeedProtocol:
    name = "seed"
    heartbeat_channel = names.HEARTBEAT_CHANNEL
    registration_match = names.WORKER_KEY_PATTERN
    follows_sentinel = True  # the reference worker resolves the primary through Sentinel
    recycle_kills_running = False  # the reference worker recycles only an idle process
    reports_name_their_pool = True  # its heartbeat carries pool and namespace
    has_retire_handshake = True

    def worker_id_from_key(self, key: str) -> str | None:
        return names.worker_id_from_key(key)

    def parse_message(self, raw: bytes | str) -> Heard:
        return Heartbeat(heartbeat_report(parse_heartbeat(raw)))

    def worker_reads(self, worker_id: str) -> Sequence[tuple[str, str]]:
        return (("hgetall", names.worker_key(worker_id)),)

    def parse_reads(self, worker_id: str, replies: Sequence[Any]) -> WorkerReport | None:
        (fields,) = replies
        return registration_report(parse_registration(worker_id, fields)) if fields else None

    def handshake(self, worker_id: str, queue_key: str) -> RetireHandshake | None:
        return RetireHandshake(names.worker_retiring_key(worker_id), names.held_key(queue_key, worker_id))

    def recycle_message(self, worker_id: str, pid: int | None, reason: str) -> tuple[str, str]:
        # The seed's command has no reason field: the request is recorded in lastRecycle instead.
        return names.worker_commands_channel(worker_id), json.dumps(to_wire(RecycleCommand(type="recycle", pid=pid)))

    def fresh_window(self, heartbeat_interval: float) -> float:
        return fresh_window(heartbeat_interval)

    def pod_env(self, pool: PoolRef, spec: WorkerPoolSpec) -> list[dict[str, Any]]:
        """The env the reference worker reads. REDIS_URL from a Secret stays a secretKeyRef."""
        plain: dict[str, object] = {
            "POOL_NAME": pool.name,
            # Where the two meanings meet: the seed's wire says "workers" for a pod's processes
            # (MIN_WORKERS, the heartbeat's min_workers), the WorkerPool says it for pods (minWorkers).
            "MIN_WORKERS": spec.processes.min,
            "MAX_WORKERS": spec.processes.max,
            "EXECUTION_TIMEOUT_SECONDS": spec.execution_timeout_seconds,
            "GRACEFUL_SHUTDOWN_SECONDS": spec.graceful_shutdown_seconds,
            "RECYCLE_AFTER_EXECUTIONS": spec.recycle_after_executions,
            "WORKER_HEARTBEAT_INTERVAL_SECONDS": spec.heartbeat_interval_seconds,
            "QUEUE_KEY": spec.redis.queue_key,
        }
        if spec.metrics_port is not None:
            plain["WORKER_METRICS_PORT"] = spec.metrics_port
        if spec.allowed_modules is not None:
            plain["WORKER_ALLOWED_MODULES"] = ",".join(spec.allowed_modules)
        if spec.redis.ca_secret_ref is not None:
            plain["REDIS_TLS_CA_FILE"] = names.REDIS_CA_FILE  # the bundle render_template mounts
        return [
            {"name": "WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POOL_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            env_value("REDIS_URL", spec.redis.url, spec.redis.url_secret_ref),
            *({"name": k, "value": str(v)} for k, v in plain.items()),
        ]

    def default_container(self, image: str) -> dict[str, Any] | None:
        return {"name": DEFAULT_CONTAINER_NAME, "image": image, "command": WORKER_COMMAND}

    def drains_on_sigterm(self, spec: WorkerPoolSpec) -> bool:
        return True  # the reference worker stops claiming and finishes what it runs

    def termination_grace_seconds(self, spec: WorkerPoolSpec) -> int:
        # A pod told to stop can finish what it runs (the reference worker drains on SIGTERM).
        return spec.execution_timeout_seconds + spec.graceful_shutdown_seconds


SEED = SeedProtocol()
