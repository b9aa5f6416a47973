"""Deleting a pool whose worker kills what runs on SIGTERM: its finalizer holds the pool
while its workers are retired (never a busy one), and goes when none is left or at the
bound, so a deletion never hangs (plain data in, the step out)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from workerpool.contracts.resource import WorkerPool
from workerpool.contracts.wire import QueueStatus
from workerpool.decide.deletion import decide_deletion, finalizers_after, retire_bound
from workerpool.decide.observation import Observation, PodView
from workerpool.decide.plan import Context, PoolMemory, decide

from .test_scaling import worker

NOW = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
FINALIZER = "bifrost.dev/retire-workers"


def pool(deleted_ago: float | None = None, finalizers: tuple[str, ...] = (), **spec: Any) -> WorkerPool:
    meta: dict[str, Any] = {"name": "b", "namespace": "ns", "uid": "u", "generation": 1, "finalizers": list(finalizers)}
    if deleted_ago is not None:
        meta["deletionTimestamp"] = (NOW - dt.timedelta(seconds=deleted_ago)).isoformat()
    return WorkerPool.from_body(
        {
            "metadata": meta,
            "spec": {
                "protocol": "bifrost",
                "minWorkers": 2,
                "processes": {"max": 2},
                "executionTimeoutSeconds": 60,
                "gracefulShutdownSeconds": 5,
                "heartbeatIntervalSeconds": 5,
                "redis": {"url": "redis://redis:6379/0"},
                "rabbitmq": {"url": "amqp://rabbitmq:5672/", "queues": ["workflow-executions"]},
                "template": {"spec": {"containers": [{"name": "worker", "image": "bifrost"}]}},
                **spec,
            },
        }
    )


def observed(busy: dict[str, int]) -> Observation:
    pods = tuple(PodView(n, f"u-{n}", "Running", True, False, 0.0, "h") for n in busy)
    return Observation(
        pods=pods,
        workers={n: worker(n, busy=b, idle=0) for n, b in busy.items()},
        queue=QueueStatus(depth=0, oldest_age_seconds=0.0),
        now=NOW.timestamp(),
    )


def test_a_pool_whose_worker_kills_on_sigterm_gets_the_finalizer_and_one_that_drains_does_not() -> None:
    assert decide_deletion(pool(), observed({}), NOW).finalizer == "add"
    assert decide_deletion(pool(finalizers=(FINALIZER,)), observed({}), NOW).finalizer is None
    draining = pool(finalizers=(FINALIZER,), drainsOnSigterm=True)
    assert decide_deletion(draining, observed({}), NOW).finalizer == "remove"  # not needed any more
    assert finalizers_after(pool(finalizers=("other", FINALIZER)), "remove") == ["other"]
    assert finalizers_after(pool(finalizers=("other",)), "add") == ["other", FINALIZER]


def test_a_deleted_pool_retires_idle_workers_keeps_busy_ones_and_holds_its_finalizer() -> None:
    deleted = pool(deleted_ago=10, finalizers=(FINALIZER,))
    plan = decide(deleted, observed({"idle": 0, "busy": 1}), Context("h"), PoolMemory(), NOW)
    assert [d.name for d in plan.scale.delete] == ["idle"] and plan.scale.create == 0
    assert plan.finalizer is None  # a worker still runs something
    assert [e.reason for e in plan.events] == ["RetiringWorkers"]
    assert plan.recheck_after is not None and plan.recheck_after <= retire_bound(deleted.spec) - 10
    again = decide(deleted, observed({"busy": 1}), Context("h"), plan.memory, NOW)
    assert "RetiringWorkers" not in [e.reason for e in again.events]  # said once
    reconciling = next(c for c in again.status["conditions"] if c["type"] == "Reconciling")  # type: ignore[index]
    assert reconciling["reason"] == "Deleting"


def test_the_finalizer_goes_when_no_worker_is_left_or_at_the_bound() -> None:
    assert decide_deletion(pool(deleted_ago=1, finalizers=(FINALIZER,)), observed({}), NOW).finalizer == "remove"
    bound = retire_bound(pool().spec)
    assert bound == 60 + 5 + 2 * 5 + 30
    late = decide_deletion(pool(deleted_ago=bound, finalizers=(FINALIZER,)), observed({"busy": 1}), NOW)
    assert late.finalizer == "remove" and [e.reason for e in late.events] == ["RetireBoundPassed"]


def test_a_deleted_pool_never_creates_a_pod() -> None:
    plan = decide(pool(deleted_ago=1), observed({}), Context("h"), PoolMemory(), NOW)  # minWorkers 2
    assert plan.scale.create == 0 and plan.finalizer is None  # not ours: garbage collection does it
