"""Build the WorkerPool status from observation (DESIGN §1), and decide when to write it.

The status is rebuilt from observation every time, never read back. It is
written when something *significant* changed (a process idle/busy, a worker
joining or leaving, the queue depth, a condition, counts) and otherwise only
every `volatile_refresh` seconds, when volatile gauges (uptime, elapsed,
memory, queue age) or which execution a busy process runs alone changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..contracts.report import ProcessReport, WorkerReport
from ..contracts.resource import (
    Condition,
    ExecutionDetail,
    LastRecycle,
    ProcessDetail,
    WorkerDetail,
    WorkerPoolStatus,
)
from ..contracts.wire import to_status
from .detail_budget import within_budget
from .observation import Observation, PodView
from .reasons import ConditionType, Reason
from .scaling import ScalePlan

READY, RECONCILING, STALLED = ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED

# At most this many workers in detail, and within a byte budget (detail_budget.py): the
# object stays well below etcd's 1.5 MiB whatever the workers report.
MAX_DETAIL_WORKERS = 50


@dataclass(frozen=True)
class Stall:
    reason: Reason
    message: str


def _condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: dt.datetime,
    previous: Sequence[Condition],
) -> Condition:
    value = "True" if status else "False"
    before = next((c for c in previous if c.type == type_), None)
    # lastTransitionTime moves only when the status flips.
    since = before.last_transition_time if before is not None and before.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message[:1000],
        observed_generation=generation,
        last_transition_time=since,
    )


def _silent_note(silent: Sequence[str], shown: int = 5) -> str:
    if not silent:
        return ""
    more = f" and {len(silent) - shown} more" if len(silent) > shown else ""
    return f"; no fresh heartbeat from {', '.join(silent[:shown])}{more}"


def worker_detail(report: WorkerReport, bounds: tuple[int, int]) -> WorkerDetail:
    """A report as `workerDetails` shows it; bounds the wire does not send come from the spec (`bounds`).

    Built without validation (the protocol validated the wire): this runs for every
    worker on every status render.
    """
    return WorkerDetail.model_construct(
        worker_id=report.worker_id,
        started_at=report.started_at,
        hostname=report.hostname,
        min_workers=report.min_processes if report.min_processes is not None else bounds[0],
        max_workers=report.max_processes if report.max_processes is not None else bounds[1],
        pool_size=report.pool_size,
        idle_count=idle_capacity(report, bounds),
        busy_count=report.busy_count,
        processes=[_process_detail(p) for p in report.processes],
    )


def _process_detail(p: ProcessReport) -> ProcessDetail:
    e = p.execution
    return ProcessDetail.model_construct(
        pid=p.pid,
        process_id=p.process_id,
        state=p.state,
        memory_mb=p.memory_mb,
        uptime_seconds=p.uptime_seconds,
        executions_completed=p.executions_completed,
        execution=ExecutionDetail.model_construct(
            execution_id=e.execution_id, started_at=e.started_at, elapsed_seconds=e.elapsed_seconds
        )
        if e is not None
        else None,
    )


def idle_capacity(report: WorkerReport, bounds: tuple[int, int]) -> int:
    """What a worker can still take: its idle processes, or, for a worker that keeps none and
    starts one per execution (Bifrost's: its wire sends no process bounds), its free slots of
    `bounds[1]` (processes.max) once a complete report says what it runs."""
    if report.max_processes is not None or not report.complete:
        return report.idle_count
    return max(report.idle_count, bounds[1] - report.busy_count)


def build_status(
    *,
    generation: int,
    obs: Observation,
    plan: ScalePlan,
    stall: Stall | None,
    last_recycle: LastRecycle | None,
    previous_conditions: Sequence[Condition],
    now: dt.datetime,
    process_bounds: tuple[int, int] = (0, 10),
) -> WorkerPoolStatus:
    """`process_bounds`: (min, max) processes shown for a worker whose wire does not send them."""
    active = [p for p in obs.pods if p.active]
    workers = dict(sorted(obs.workers.items()))
    ready, silent = _readiness(obs, active)

    def condition(type_: ConditionType, status: bool, reason: str, message: str) -> Condition:
        return _condition(type_, status, reason, message, generation, now, previous_conditions)

    reconciling = plan.reconciling_reason is not None
    detailed = list(workers.values())[:MAX_DETAIL_WORKERS]
    shown = within_budget([worker_detail(w.info, process_bounds) for w in detailed])
    conditions = [
        condition(READY, *_ready_condition(plan, stall, ready, silent)),
        condition(RECONCILING, reconciling, plan.reconciling_reason or Reason.RECONCILED, plan.reconciling_message),
        condition(
            STALLED, stall is not None, stall.reason if stall else Reason.PROGRESSING, stall.message if stall else ""
        ),
    ]
    return WorkerPoolStatus(
        observed_generation=generation,
        desired_workers=plan.desired,
        workers=len(active),
        ready_workers=ready,
        pool_size=sum(w.info.pool_size for w in workers.values()),
        idle_count=sum(idle_capacity(w.info, process_bounds) for w in workers.values()),
        busy_count=sum(w.info.busy_count for w in workers.values()),
        queue=obs.queue if obs.queue is not None else None,
        worker_details=shown.details,
        worker_details_omitted=max(0, len(workers) - MAX_DETAIL_WORKERS) + shown.workers_omitted,
        process_details_omitted=shown.processes_omitted,
        last_recycle=last_recycle,
        conditions=conditions,
    )


def _readiness(obs: Observation, active: Sequence[PodView]) -> tuple[int, list[str]]:
    """Ready workers (running, registered, heard from lately) and the running pods whose worker went silent.

    While Redis itself is unreachable every worker is silent: Stalled says so, and
    the counts stay as last known (no status rewrite for each expiring worker).
    """
    judged = obs.redis_error is None
    registered = [p for p in active if p.ready and p.name in obs.workers]
    silent = [p.name for p in registered if judged and not obs.workers[p.name].fresh]
    return len(registered) - len(silent), sorted(silent)


# Reconciling for these, a pool with its desired workers ready serves its demand: Ready.
_OVER_CAPACITY = (Reason.SCALING_DOWN, Reason.WAITING_FOR_IDLE_WORKERS, Reason.REMOVALS_CALLED_OFF)


def _ready_condition(plan: ScalePlan, stall: Stall | None, ready: int, silent: Sequence[str]) -> tuple[bool, str, str]:
    if stall is not None:
        return False, stall.reason, stall.message
    reason = plan.reconciling_reason
    if reason is not None and not (reason in _OVER_CAPACITY and ready >= plan.desired):
        return False, reason, plan.reconciling_message
    counted = f"{ready} of {plan.desired} workers are running and registered" + _silent_note(silent)
    if ready < plan.desired:
        return False, Reason.WAITING_FOR_WORKERS, counted
    return True, Reason.WORKERS_READY, counted


def invalid_status(
    generation: int, message: str, previous_conditions: Sequence[Condition], now: dt.datetime
) -> WorkerPoolStatus:
    """A spec the operator cannot act on (the API server's validation let it through): Stalled,
    with transition times that move only on a flip, so re-checking it writes nothing new."""
    return WorkerPoolStatus(
        observed_generation=generation,
        conditions=[
            _condition(READY, False, Reason.INVALID_SPEC, message, generation, now, previous_conditions),
            _condition(RECONCILING, False, Reason.RECONCILED, "", generation, now, previous_conditions),
            _condition(STALLED, True, Reason.INVALID_SPEC, message, generation, now, previous_conditions),
        ],
    )


def previous_conditions(status: dict[str, Any] | None) -> list[Condition]:
    """The conditions a pool's status holds now (unreadable ones skipped): transition times carry over."""
    out = []
    for raw in (status or {}).get("conditions") or []:
        try:
            out.append(Condition.model_validate(raw))
        except ValidationError:
            continue
    return out


def merge_patch(rendered: dict[str, Any], last_written: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON merge patch from the last written status to `rendered`: top-level fields
    the new status no longer has become null (removed). Objects below the top level
    are merged by the API server (RFC 7386), which is right because the rendered
    status carries each of them whole (a queue reading has both its fields; lists,
    such as workerDetails and conditions, are always replaced)."""
    patch = dict(rendered)
    for key in last_written or {}:
        patch.setdefault(key, None)
    return patch


def render(status: WorkerPoolStatus) -> dict[str, Any]:
    """The JSON written to the status subresource (camelCase, no nulls)."""
    rendered: dict[str, Any] = _drop_none(to_status(status))
    return rendered


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# Gauges, and what changes with every execution (which one runs, how many ran):
# a pool under execution churn is not rewritten for each new execution id, only
# when a process turns idle or busy (or every volatile_refresh, with the rest).
# At 100 pools of short executions this halved the status writes.
_VOLATILE_PROCESS = ("memoryMb", "uptimeSeconds", "executionsCompleted")


def significant(rendered: dict[str, Any]) -> dict[str, Any]:
    """The status without volatile gauges: a change here is worth a write now.

    Built from shallow copies of only the parts that lose a gauge (the rest is
    shared, never mutated): this runs on every reconcile of every pool.
    """
    out = dict(rendered)
    queue = out.get("queue")
    if isinstance(queue, dict):
        out["queue"] = {k: v for k, v in queue.items() if k != "oldestAgeSeconds"}
    details = out.get("workerDetails")
    if isinstance(details, list):
        out["workerDetails"] = [_significant_worker(w) for w in details]
    return out


def _significant_worker(worker: Any) -> Any:
    procs = worker.get("processes") if isinstance(worker, dict) else None
    if not isinstance(procs, list):
        return worker
    return {**worker, "processes": [_significant_process(p) for p in procs]}


def _significant_process(proc: Any) -> Any:
    if not isinstance(proc, dict):
        return proc
    out = {k: v for k, v in proc.items() if k not in _VOLATILE_PROCESS}
    if "execution" in out:
        out["execution"] = out["execution"] is not None  # running something, whichever it is
    return out


@dataclass(frozen=True)
class WritePolicy:
    min_interval: float = 1.0  # never more than about one write per second
    volatile_refresh: float = 30.0  # gauges alone: about one write per 30 s


def should_write(
    rendered: dict[str, Any],
    last: dict[str, Any] | None,
    last_write: float,
    now: float,
    policy: WritePolicy,
) -> tuple[bool, float]:
    """(write now?, seconds until a write would be allowed/needed otherwise)."""
    if last is None:
        return True, 0.0
    if rendered == last:
        return False, policy.volatile_refresh
    since = now - last_write
    if significant(rendered) != significant(last):
        wait = policy.min_interval - since
        return (wait <= 0), max(0.0, wait)
    wait = policy.volatile_refresh - since
    return (wait <= 0), max(0.0, wait)
