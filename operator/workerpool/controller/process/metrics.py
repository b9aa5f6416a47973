"""Prometheus metrics. Labels never carry a Redis URL (it may hold a password)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from ...contracts.report import PROCESS_STATES

# The `state` label of workerpool_workers (pods): see PoolController._metrics.
POD_STATES = ("running", "pending", "ready")

WORKERS = Gauge("workerpool_workers", "Worker pods by state", ["namespace", "pool", "state"])
PROCESSES = Gauge("workerpool_processes", "Worker processes by state", ["namespace", "pool", "state"])
QUEUE_DEPTH = Gauge("workerpool_queue_depth", "Pending executions", ["namespace", "pool"])
DESIRED = Gauge("workerpool_desired_workers", "Desired worker pods", ["namespace", "pool"])
SCALE_EVENTS = Counter("workerpool_scale_events_total", "Pods created or deleted", ["namespace", "pool", "action"])
RECYCLES = Counter("workerpool_recycle_requests_total", "Recycle targets by result", ["namespace", "pool", "result"])
RECYCLES_DEFERRED = Counter(
    "workerpool_recycle_deferrals_total",
    "Rounds that held a recycle back because a target worker was not subscribed to its commands yet",
    ["namespace", "pool"],
)
SCALE_UP_REACTION = Histogram(
    "workerpool_scale_up_reaction_seconds",
    "From the event that showed more demand (heartbeat, queue, spec) to the new pod's creation",
    ["namespace", "pool"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COLD_START = Histogram(
    "workerpool_cold_start_seconds",
    "From a worker pod's creation to its worker's first report in Redis (scheduling, image, start-up)",
    ["namespace", "pool"],
    buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300),
)
LOOP_LAG = Histogram(
    "workerpool_event_loop_lag_seconds",
    "How late the operator's event loop woke a 250 ms timer (a stall delays every pool)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GC_PAUSE = Histogram(
    "workerpool_gc_pause_seconds",
    "How long each garbage collection stopped the operator, by generation (2: a full one)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RECONCILE = Histogram(
    "workerpool_reconcile_duration_seconds",
    "Reconcile durations",
    ["namespace", "pool"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
MARK_WRITES = Counter(
    "workerpool_busy_mark_writes_total",
    "Writes of busy workers' node-autoscaler annotations",
    ["namespace", "pool", "change"],
)
STATUS_WRITES = Counter("workerpool_status_writes_total", "Status subresource writes", ["namespace", "pool"])
MALFORMED = Counter(
    "workerpool_malformed_redis_data_total",
    "Redis data refused unparsed or skipped: kind heartbeat | registration, reason invalid | too_large | wrong_type",
    ["kind", "reason"],
)
LOOP_CRASHES = Counter(
    "workerpool_loop_crashes_total",
    "Unexpected exceptions that ended a background loop (restarted by its supervisor), by kind of loop",
    ["loop"],
)
REDIS_UP = Gauge("workerpool_redis_up", "Whether a Redis (by URL hash) is reachable", ["hub"])
UNREPLICATED_WRITES = Counter(
    "workerpool_redis_unreplicated_writes_total",
    "Durable writes (recycle record, retire mark) no replica acknowledged in time",
    ["write"],
)
DELETES_AVERTED = Counter(
    "workerpool_deletes_averted_total",
    "Pod deletions called off because the worker turned busy between the decision and the delete",
    ["namespace", "pool"],
)
RABBITMQ_UP = Gauge("workerpool_rabbitmq_up", "Whether a RabbitMQ broker (by URL hash) is reachable", ["broker"])
ERRORS = Counter("workerpool_reconcile_errors_total", "Reconciles that failed", ["namespace", "pool", "reason"])
RETRY_DELAY = Gauge(
    "workerpool_reconcile_retry_delay_seconds",
    "The pool's current retry delay after failed reconciles (0: the last one succeeded)",
    ["namespace", "pool"],
)
EVICTIONS = Counter(
    "workerpool_evictions_total",
    "Evictions of worker pods answered by the webhook: held (429, still running executions) or allowed",
    ["namespace", "pool", "outcome"],
)
API_WRITES_IN_FLIGHT = Gauge(
    "workerpool_api_writes_in_flight",
    "Writes sent to the API server and not answered yet (at most WORKERPOOL_API_WRITES_IN_FLIGHT)",
)
API_WRITES_QUEUED = Gauge(
    "workerpool_api_writes_queued",
    "Writes waiting for their turn in the client-side limiter (the operator's write backlog)",
)
STATUS_PENDING_SINCE = Gauge(
    "workerpool_status_pending_since_seconds",
    "When the pool's status write now waiting for its turn was decided (Unix time; 0: none waits):"
    " time() minus this is how far the status is behind",
    ["namespace", "pool"],
)
API_WRITE_WAIT = Histogram(
    "workerpool_api_write_wait_seconds",
    "How long a write to the API server waited for the client-side rate limiter (only writes that waited)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LEADER = Gauge("workerpool_leader", "1 while this replica holds the leader Lease and acts, else 0")


def cold_start(namespace: str, pool: str) -> Callable[[float], None]:
    return COLD_START.labels(namespace, pool).observe


def forget_pool(namespace: str, pool: str) -> None:
    """Drop a deleted pool's series."""
    for metric in (WORKERS, PROCESSES):
        for state in (*PROCESS_STATES, *POD_STATES):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, pool, state)
    for change in ("mark", "unmark"):
        with contextlib.suppress(KeyError):
            MARK_WRITES.remove(namespace, pool, change)
    for gauge in (QUEUE_DEPTH, DESIRED, RETRY_DELAY, SCALE_UP_REACTION, COLD_START, DELETES_AVERTED):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, pool)
