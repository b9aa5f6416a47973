"""Deleting a WorkerPool whose worker kills what runs on SIGTERM (Bifrost's worker of
commit 841bc8e): garbage collection would delete every pod at once and kill every
running execution. Such a pool carries a finalizer; once it is deleted, its workers
are retired like a scale-down to zero (idle ones at once, busy ones as their fresh
heartbeat shows them idle, never a busy one), and the finalizer is removed when no
worker pod is left, or at the latest after the bound below, so that deleting a pool
never hangs (garbage collection then deletes what remains).

The bound: the longest an execution that was running when the pool was deleted can
still run (executionTimeoutSeconds + gracefulShutdownSeconds), two heartbeats to see
its worker idle, and a margin for the deletes. A worker fed new work all along (its
queue keeps delivering) can still be running something at the bound: stop the
producers, or empty the queue, before deleting such a pool (docs/operator.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from ..contracts import names
from ..contracts.resource import ScalingSpec, WorkerPool, WorkerPoolSpec
from ..protocols import protocol_for
from .events import Event, EventReason
from .observation import Observation

MARGIN_SECONDS = 30

FinalizerChange = Literal["add", "remove"]


def retire_bound(spec: WorkerPoolSpec) -> float:
    """Seconds from the deletion until the finalizer goes, whatever still runs."""
    return (
        spec.execution_timeout_seconds
        + spec.graceful_shutdown_seconds
        + 2 * spec.heartbeat_interval_seconds
        + (MARGIN_SECONDS)
    )


def needs_finalizer(spec: WorkerPoolSpec) -> bool:
    return not protocol_for(spec.protocol).drains_on_sigterm(spec)


def retiring_spec(spec: WorkerPoolSpec) -> WorkerPoolSpec:
    """The spec a deleted pool is scaled by: no worker wanted, none kept for a window."""
    return spec.model_copy(
        update={"min_workers": 0, "max_workers": 0, "scaling": ScalingSpec(scale_down_delay_seconds=0)}
    )


@dataclass(frozen=True)
class DeletionStep:
    finalizer: FinalizerChange | None = None
    events: tuple[Event, ...] = ()
    recheck_after: float | None = None  # seconds until the bound releases the finalizer


def decide_deletion(pool: WorkerPool, obs: Observation, now: dt.datetime) -> DeletionStep:
    """What the finalizer needs this round (for a pool being deleted or not)."""
    has = names.RETIRE_FINALIZER in pool.finalizers
    if pool.deleting_since is None:
        wanted = needs_finalizer(pool.spec)
        return DeletionStep("add" if wanted and not has else "remove" if has and not wanted else None)
    if not has:
        return DeletionStep()  # not ours to hold (a draining worker's pool): garbage collection does it
    left = [p.name for p in obs.pods if p.active]
    waited = (now - pool.deleting_since).total_seconds()
    bound = retire_bound(pool.spec)
    if not left:
        return DeletionStep("remove")
    if waited >= bound:
        running = ", ".join(sorted(left)[:10])
        message = (
            f"the pool was deleted {waited:.0f} s ago and the retire bound ({bound:.0f} s: executionTimeoutSeconds +"
            f" gracefulShutdownSeconds + 2 heartbeats + {MARGIN_SECONDS} s) has passed: garbage collection deletes"
            f" the workers still running something ({running})"
        )
        return DeletionStep("remove", (Event("Warning", EventReason.RETIRE_BOUND_PASSED, message),))
    return DeletionStep(recheck_after=bound - waited)


def finalizers_after(pool: WorkerPool, change: FinalizerChange) -> list[str]:
    """The pool's finalizers once ours is added or removed (the others' kept, in order)."""
    kept = [f for f in pool.finalizers if f != names.RETIRE_FINALIZER]
    return [*kept, names.RETIRE_FINALIZER] if change == "add" else kept


def deletion_event(pool: WorkerPool, active: int) -> Event:
    bound = retire_bound(pool.spec)
    return Event(
        "Normal",
        EventReason.RETIRING_WORKERS,
        f"the pool is being deleted: its {active} workers are retired first (idle ones now, busy ones once their"
        f" executions end, at most {bound:.0f} s), then garbage collection removes the pool",
    )
