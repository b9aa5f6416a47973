"""The wire of the worker the Bifrost platform ships (DESIGN §6; the observed facts
and recorded samples are `notes/bifrost-wire.md` and `bifrost/` in the shared docs).

- registration: hash `bifrost:pool:{id}` (no counts, no pool), TTL 30 s;
- heartbeat snapshot: string `bifrost:pool:{id}:heartbeat`, TTL 60 s: the report;
- heartbeats and other events on `bifrost:platform_workers` (`worker_offline`
  removes a worker; `pool_scaling`, `pool_progress`, ... are not used);
- commands `{"action": "recycle_process" | "recycle_all", ...}` on
  `bifrost:pool:{id}:commands`; a recycle restarts the worker's process pool
  and kills what runs, so only a worker that runs nothing is sent one;
- no retire handshake: a worker is removed only when a fresh heartbeat shows
  nothing running, re-checked against the snapshot just before the delete.
- the env it reads: `BIFROST_*` (pydantic-settings), none of the seed's names.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..contracts.report import WorkerReport, process_report
from ..contracts.resource import WorkerPoolSpec
from ..contracts.wire import (
    MAX_PROCESSES,
    MAX_TEXT,
    ContractModel,
    Count,
    Id,
    Megabytes,
    Moment,
    Pid,
    Seconds,
    Text,
    WireFormatError,
    json_object,
    validate_message,
)
from .base import Heard, Heartbeat, Ignored, Offline, PoolRef, RetireHandshake, env_value, fresh_window

KEY_PREFIX = "bifrost:pool:"
SNAPSHOT_SUFFIX = ":heartbeat"
EVENTS_CHANNEL = "bifrost:platform_workers"
REGISTRATION_TTL_SECONDS = 30
SNAPSHOT_TTL_SECONDS = 60
# Bifrost's SIGTERM waits for in-flight dispatches, then stops its pool; the pod gets
# this much beyond the drain deadline to finish that and exit (idle: ~2.6 s measured).
TERMINATION_MARGIN_SECONDS = 30


def registration_key(worker_id: str) -> str:
    return f"{KEY_PREFIX}{worker_id}"


def snapshot_key(worker_id: str) -> str:
    return f"{KEY_PREFIX}{worker_id}{SNAPSHOT_SUFFIX}"


def commands_channel(worker_id: str) -> str:
    return f"{KEY_PREFIX}{worker_id}:commands"


# --- the heartbeat, as Bifrost sends it (extra fields ignored) -----------------------------


class BifrostExecution(ContractModel):
    execution_id: Id
    started_at: Moment
    elapsed_seconds: Seconds


class BifrostProcess(ContractModel):
    pid: Pid
    process_id: Text
    # Bifrost reports busy and killed (a child exists only while it runs); idle is accepted
    # so a later Bifrost that keeps idle children does not make every heartbeat malformed.
    state: Literal["idle", "busy", "killed"]
    memory_mb: Megabytes = 0.0
    uptime_seconds: Seconds = 0.0
    executions_completed: Count = 0
    execution: BifrostExecution | None = None  # also on a killed process, during its kill


class BifrostHeartbeat(ContractModel):
    type: Literal["worker_heartbeat"]
    worker_id: Id
    hostname: Text = "unknown"
    started_at: Moment
    timestamp: Moment
    processes: list[BifrostProcess] = Field(default_factory=list, max_length=MAX_PROCESSES)
    pool_size: Count = 0
    idle_count: Count = 0
    busy_count: Count = 0


class BifrostOffline(ContractModel):
    type: Literal["worker_offline"]
    worker_id: Id


def _report(hb: BifrostHeartbeat) -> WorkerReport:
    return WorkerReport(
        worker_id=hb.worker_id,
        started_at=hb.started_at,
        hostname=hb.hostname,
        pool_size=hb.pool_size,
        idle_count=hb.idle_count,
        busy_count=hb.busy_count,
        processes=tuple(process_report(p) for p in hb.processes),
        reported_at=hb.timestamp,
    )


def parse_heartbeat(raw: bytes | str, what: str = "heartbeat") -> BifrostHeartbeat:
    return validate_message(BifrostHeartbeat, json_object(raw, what=what), what=what)


def _aware_time(text: str, what: str) -> dt.datetime:
    """An ISO-8601 time with its offset (a naive one cannot be compared with the others)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise WireFormatError(f"{what}: not an ISO-8601 time (got {text[:40]!r})") from None
    if moment.tzinfo is None:
        raise WireFormatError(f"{what}: a time without its UTC offset (got {text[:40]!r})")
    return moment


def _decode(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class BifrostProtocol:
    name = "bifrost"
    heartbeat_channel = EVENTS_CHANNEL
    # Both the registrations and the snapshots: a worker whose registration lapsed (Bifrost
    # never re-creates it) still heartbeats, and must not read as a pod with no worker.
    registration_match = f"{KEY_PREFIX}*"
    follows_sentinel = False  # BIFROST_REDIS_URL: one URL, no failover
    recycle_kills_running = True
    reports_name_their_pool = False  # registration and heartbeat carry the worker id (the pod's name) only
    has_retire_handshake = False

    def worker_id_from_key(self, key: str) -> str | None:
        if not key.startswith(KEY_PREFIX):
            return None
        rest = key[len(KEY_PREFIX) :]
        rest = rest.removesuffix(SNAPSHOT_SUFFIX)
        return rest if rest and ":" not in rest else None

    def parse_message(self, raw: bytes | str) -> Heard:
        data = json_object(raw, what="event")
        kind = data.get("type")
        if kind == "worker_heartbeat":
            return Heartbeat(_report(validate_message(BifrostHeartbeat, data, what="heartbeat")))
        if kind == "worker_offline":
            return Offline(validate_message(BifrostOffline, data, what="worker_offline").worker_id)
        return Ignored(str(kind))

    def worker_reads(self, worker_id: str) -> Sequence[tuple[str, str]]:
        return (("hgetall", registration_key(worker_id)), ("get", snapshot_key(worker_id)))

    def parse_reads(self, worker_id: str, replies: Sequence[Any]) -> WorkerReport | None:
        fields, snapshot = replies
        if snapshot is not None:
            hb = parse_heartbeat(snapshot, what=f"{snapshot_key(worker_id)}")
            if hb.worker_id != worker_id:
                raise WireFormatError(f"{snapshot_key(worker_id)}: worker_id {hb.worker_id!r} does not match the key")
            return _report(hb)
        if not fields:
            return None
        # Registered, but no heartbeat snapshot: a worker whose counts are unknown
        # (never idle, never ready) until its next heartbeat.
        data = {_decode(k): _decode(v) for k, v in fields.items()}
        if "started_at" not in data:
            raise WireFormatError(f"{registration_key(worker_id)}: started_at: field required")
        started = _aware_time(data["started_at"], f"{registration_key(worker_id)}: started_at")
        return WorkerReport(
            worker_id=worker_id,
            started_at=started,
            hostname=data.get("hostname", "unknown")[:MAX_TEXT],
            pool_size=0,
            idle_count=0,
            busy_count=0,
            complete=False,
        )

    def handshake(self, worker_id: str, queue_key: str) -> RetireHandshake | None:
        return None  # Bifrost's worker has none: see the module docstring

    def recycle_message(self, worker_id: str, pid: int | None, reason: str) -> tuple[str, str]:
        if pid is None:
            message: dict[str, Any] = {"action": "recycle_all", "reason": reason}
        else:
            message = {"action": "recycle_process", "pid": pid, "reason": reason}
        return commands_channel(worker_id), json.dumps(message)

    def fresh_window(self, heartbeat_interval: float) -> float:
        return fresh_window(heartbeat_interval)

    def pod_env(self, pool: PoolRef, spec: WorkerPoolSpec) -> list[dict[str, Any]]:
        """The `BIFROST_*` settings the worker reads; its worker_id is HOSTNAME (the pod name)."""
        rabbitmq = spec.rabbitmq
        capacity = spec.processes.max
        plain: dict[str, object] = {
            "BIFROST_MAX_WORKERS": capacity,
            "BIFROST_MAX_CONCURRENCY": capacity,
            "BIFROST_EXECUTION_TIMEOUT_SECONDS": spec.execution_timeout_seconds,
            "BIFROST_GRACEFUL_SHUTDOWN_SECONDS": spec.graceful_shutdown_seconds,
            "BIFROST_WORKER_HEARTBEAT_INTERVAL_SECONDS": spec.heartbeat_interval_seconds,
            "BIFROST_DRAIN_DEADLINE_SECONDS": drain_deadline_seconds(spec),
        }
        return [
            env_value("BIFROST_REDIS_URL", spec.redis.url, spec.redis.url_secret_ref),
            env_value(
                "BIFROST_RABBITMQ_URL",
                rabbitmq.url if rabbitmq is not None else None,
                rabbitmq.url_secret_ref if rabbitmq is not None else None,
            ),
            *({"name": k, "value": str(v)} for k, v in plain.items()),
        ]

    def default_container(self, image: str) -> dict[str, Any] | None:
        return None  # Bifrost's image and command come from the template (admission requires a container)

    def drains_on_sigterm(self, spec: WorkerPoolSpec) -> bool:
        return spec.drains_on_sigterm  # the newer worker drains; the one of commit 841bc8e kills

    def termination_grace_seconds(self, spec: WorkerPoolSpec) -> int:
        return drain_deadline_seconds(spec) + TERMINATION_MARGIN_SECONDS


def drain_deadline_seconds(spec: WorkerPoolSpec) -> int:
    return spec.execution_timeout_seconds + spec.graceful_shutdown_seconds


BIFROST = BifrostProtocol()
