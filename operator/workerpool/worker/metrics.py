"""The worker's Prometheus metrics, served on WORKER_METRICS_PORT when the operator injects it
(the pool's `spec.metricsPort`); nothing is served when it is unset.

Outcomes: success; failure (the function raised, or the execution could not
run: bad context); timeout (the worker terminated it); crashed (its process
died under it); worker_lost (its worker was lost too often and it was given up).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..contracts.wire import PROCESS_STATES, ExecutionResult, ProcessState

REGISTRY = CollectorRegistry(auto_describe=True)
OUTCOMES = ("success", "failure", "timeout", "crashed", "worker_lost")

EXECUTIONS = Counter(
    "workerpool_worker_executions_total",
    "Executions finished by this worker, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "workerpool_worker_execution_duration_seconds",
    "How long executions ran, by outcome",
    ["outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "workerpool_worker_queue_wait_seconds",
    "From an execution's enqueue time (its score in the queue) to its claim by this worker",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
PROCESSES = Gauge("workerpool_worker_processes", "Processes of this worker, by state", ["state"], registry=REGISTRY)
RECYCLES = Counter(
    "workerpool_worker_process_recycles_total",
    "Processes stopped to be replaced (a recycle command, or recycleAfterExecutions)",
    registry=REGISTRY,
)
COMMANDS = Counter(
    "workerpool_worker_commands_total",
    "Commands heard on worker:{id}:commands, by what came of them",
    ["outcome"],
    registry=REGISTRY,
)
CommandOutcome = Literal["recycling", "busy", "no_idle_process", "no_such_pid", "already_stopping", "malformed"]
COMMAND_OUTCOMES: tuple[CommandOutcome, ...] = get_args(CommandOutcome)
CRASHES = Counter(
    "workerpool_worker_process_crashes_total", "Processes that exited without being told to", registry=REGISTRY
)

# Error types the worker itself gives (worker/outcomes.py, worker/dispatch.py).
_OUTCOME_OF_ERROR = {"TimeoutError": "timeout", "ProcessCrashed": "crashed", "WorkerLost": "worker_lost"}


def outcome(result: ExecutionResult) -> str:
    if result.success:
        return "success"
    return _OUTCOME_OF_ERROR.get(result.error_type or "", "failure")


def record_result(result: ExecutionResult) -> None:
    kind = outcome(result)
    EXECUTIONS.labels(kind).inc()
    DURATION.labels(kind).observe(result.duration_ms / 1000)


def serve(port: int, count: Callable[[ProcessState], int]) -> None:
    """Start the endpoint (a thread, prometheus_client's own server); `count(state)` is read on each scrape."""
    for kind in OUTCOMES:  # every outcome is a series from the start (rate() needs the zero)
        EXECUTIONS.labels(kind)
        DURATION.labels(kind)
    for kind in COMMAND_OUTCOMES:
        COMMANDS.labels(kind)
    for state in PROCESS_STATES:
        PROCESSES.labels(state).set_function(partial(count, state))
    start_http_server(port, registry=REGISTRY)
