"""The per-pool decision `decide()`: plain data in, a Plan out (no I/O)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from workerpool.contracts.resource import WorkerPool
from workerpool.contracts.wire import QueueStatus
from workerpool.decide.observation import Observation, PodView
from workerpool.decide.plan import PASSWORD_IN_URL, Context, PoolMemory, decide
from workerpool.decide.status import Stall

from .test_scaling import worker

NOW = dt.datetime(2026, 11, 26, 10, 0, 0, 250000, tzinfo=dt.UTC)


def pool(url: str = "redis://redis:6379/0", generation: int = 1, recycle: str | None = None) -> WorkerPool:
    annotations = {"bifrost.dev/recycle": recycle} if recycle is not None else {}
    return WorkerPool.from_body(
        {
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "uid": "uid-1",
                "generation": generation,
                "annotations": annotations,
            },
            "spec": {"minWorkers": 1, "maxWorkers": 4, "processes": {"max": 2}, "redis": {"url": url}},
        }
    )


def observation(redis_error: str | None = None, busy: int = 0) -> Observation:
    pod = PodView("w0", "u0", "Running", True, False, 0.0, "h")
    return Observation(
        pods=(pod,),
        workers={"w0": worker("w0", busy=busy, idle=2 - busy)},
        queue=None if redis_error else QueueStatus(depth=0, oldest_age_seconds=0.0),
        redis_error=redis_error,
        now=NOW.timestamp(),
    )


def cond(status: dict[str, Any] | None, type_: str) -> tuple[str, str]:
    assert status is not None
    c = next(c for c in status["conditions"] if c["type"] == type_)
    return c["status"], c["reason"]


def test_a_password_in_the_url_is_warned_about_once_per_generation() -> None:
    url = "redis://:secret@redis:6379/0"
    first = decide(pool(url), observation(), Context("h"), PoolMemory(), NOW)
    assert PASSWORD_IN_URL in first.events
    again = decide(pool(url), observation(), Context("h"), first.memory, NOW)
    assert PASSWORD_IN_URL not in again.events
    edited = decide(pool(url, generation=2), observation(), Context("h"), again.memory, NOW)
    assert PASSWORD_IN_URL in edited.events
    assert "secret" not in repr(edited.status)


def test_a_password_in_the_rabbitmq_url_is_warned_about_too() -> None:
    p = WorkerPool.from_body(
        {
            "metadata": {"name": "b", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {
                "protocol": "bifrost",
                "redis": {"url": "redis://redis:6379/0"},
                "rabbitmq": {"url": "amqp://bifrost:hunter2@rabbitmq:5672/", "queues": ["workflow-executions"]},
                "template": {"spec": {"containers": [{"name": "worker", "image": "bifrost"}]}},
            },
        }
    )
    plan = decide(p, observation(), Context("h"), PoolMemory(), NOW)
    warned = [e.message for e in plan.events if e.reason == "PasswordInURL"]
    assert len(warned) == 1 and "spec.rabbitmq.url" in warned[0] and "hunter2" not in warned[0]
    again = decide(p, observation(), Context("h"), plan.memory, NOW)
    assert not [e for e in again.events if e.reason == "PasswordInURL"]


@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        (Context("h"), ("False", "Progressing")),
        (Context("h", create_error="pod creation rejected (403): forbidden"), ("True", "PodsRejected")),
        # A Redis stall says more than a refused create: it is what to fix first.
        (
            Context("h", stall=Stall("RedisUnavailable", "down"), create_error="rejected"),
            ("True", "RedisUnavailable"),
        ),
    ],
)
def test_stalled_says_why(ctx: Context, expected: tuple[str, str]) -> None:
    assert cond(decide(pool(), observation(), ctx, PoolMemory(), NOW).status, "Stalled") == expected


def test_no_status_before_the_first_resync_unless_stalled() -> None:
    assert decide(pool(), observation(), Context("h", status_known=False), PoolMemory(), NOW).status is None
    stalled = Context("h", stall=Stall("RedisSecretNotFound", "no secret"), status_known=False)
    assert cond(decide(pool(), observation(), stalled, PoolMemory(), NOW).status, "Stalled")[0] == "True"


def test_a_recycle_waits_for_redis_then_is_decided_once() -> None:
    pid = observation().workers["w0"].info.processes[0].pid
    p = pool(recycle=f"w0:{pid}")
    waiting = decide(p, observation(redis_error="down"), Context("h"), PoolMemory(), NOW)
    assert waiting.recycle is None and waiting.memory.handled_recycle is None
    # A replica that just took over has not read the workers yet: it would reject every target.
    unread = decide(p, observation(), Context("h", status_known=False), PoolMemory(), NOW)
    assert unread.recycle is None and unread.memory.handled_recycle is None
    plan = decide(p, observation(), Context("h"), waiting.memory, NOW)
    assert plan.recycle is not None
    assert [(c.worker_id, c.pid) for c in plan.recycle.publish or ()] == [("w0", pid)]
    assert plan.status is not None and plan.status["lastRecycle"]["request"] == f"w0:{pid}"
    assert [e.reason for e in plan.recycle_events] == ["RecycleRequested"]
    assert decide(p, observation(), Context("h"), plan.memory, NOW).recycle is None


def test_a_malformed_recycle_is_rejected_without_publishing() -> None:
    plan = decide(pool(recycle="w0:abc"), observation(), Context("h"), PoolMemory(), NOW)
    assert plan.recycle is not None and plan.recycle.publish is None
    assert plan.status is not None and plan.status["lastRecycle"]["results"][0]["status"] == "rejected"
    assert [e.reason for e in plan.recycle_events] == ["RecycleRejected"]


def test_memory_from_a_restarted_operators_status() -> None:
    last = {"request": "w0@1", "handledAt": "2026-11-26T09:00:00Z", "results": []}
    assert PoolMemory.from_status({"lastRecycle": last}).handled_recycle == "w0@1"
    assert PoolMemory.from_status({"lastRecycle": {"request": 5}}) == PoolMemory()
    assert PoolMemory.from_status(None) == PoolMemory()


def test_scale_up_and_the_next_check_come_from_the_scale_decision() -> None:
    plan = decide(pool(), observation(busy=2), Context("h"), PoolMemory(), NOW)
    assert plan.scale.create == 0 and plan.scale.desired == 1
    assert plan.events == tuple(plan.scale.events)
    assert plan.recheck_after == plan.scale.recheck_after


def test_the_pool_wakes_when_its_first_fresh_worker_would_fall_silent() -> None:
    """No event marks a heartbeat that did not come: the Plan schedules the look."""
    obs = observation()
    assert obs.stale_in is None and decide(pool(), obs, Context("h"), PoolMemory(), NOW).recheck_after is None
    silent_soon = Observation(obs.pods, obs.workers, obs.queue, None, obs.now, stale_in=3.5)
    assert decide(pool(), silent_soon, Context("h"), PoolMemory(), NOW).recheck_after == 3.5


def bifrost_pool(**spec: Any) -> WorkerPool:
    return WorkerPool.from_body(
        {
            "metadata": {"name": "b", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {
                "protocol": "bifrost",
                "minWorkers": 1,
                "processes": {"max": 4},
                "redis": {"url": "redis://redis:6379/0"},
                "rabbitmq": {"url": "amqp://rabbitmq:5672/", "queues": ["workflow-executions"]},
                "template": {"spec": {"containers": [{"name": "worker", "image": "bifrost"}]}},
                "scaling": {"scaleDownDelaySeconds": 0},
                **spec,
            },
        }
    )


def three_busy_workers() -> Observation:
    """Steady traffic: each of three workers runs one execution; one worker would do."""
    pods = tuple(PodView(f"w{i}", f"u{i}", "Running", True, False, 0.0, "h") for i in range(3))
    return Observation(
        pods=pods,
        workers={f"w{i}": worker(f"w{i}", busy=1, idle=0) for i in range(3)},
        queue=QueueStatus(depth=0, oldest_age_seconds=0.0),
        now=NOW.timestamp(),
    )


def test_removals_called_off_in_a_row_say_why_the_pool_cannot_shrink_and_it_stays_ready() -> None:
    quiet = decide(bifrost_pool(), three_busy_workers(), Context("h", removals_called_off=2), PoolMemory(), NOW)
    assert cond(quiet.status, "Reconciling") == ("True", "WaitingForIdleWorkers")
    pinned = decide(bifrost_pool(), three_busy_workers(), Context("h", removals_called_off=3), PoolMemory(), NOW)
    assert cond(pinned.status, "Reconciling") == ("True", "RemovalsCalledOff")
    (message,) = [c["message"] for c in pinned.status["conditions"] if c["type"] == "Reconciling"]  # type: ignore[index]
    assert "the last 3 removals were called off" in message and "drainsOnSigterm: true" in message
    # More workers than desired, all ready: the pool serves its demand.
    assert cond(pinned.status, "Ready") == ("True", "WorkersReady")
    # A pool whose worker drains on SIGTERM is not pinned (nothing is called off): the least busy go.
    draining = decide(bifrost_pool(drainsOnSigterm=True), three_busy_workers(), Context("h"), PoolMemory(), NOW)
    assert [d.name for d in draining.scale.delete] == ["w0", "w1"]
    assert cond(draining.status, "Reconciling") == ("True", "ScalingDown")


def test_a_pool_pinned_by_busy_workers_says_what_would_let_it_shrink() -> None:
    plan = decide(bifrost_pool(), three_busy_workers(), Context("h"), PoolMemory(), NOW)
    reconciling = next(c for c in plan.status["conditions"] if c["type"] == "Reconciling")  # type: ignore[index]
    assert reconciling["reason"] == "WaitingForIdleWorkers" and "drainsOnSigterm: true" in reconciling["message"]
