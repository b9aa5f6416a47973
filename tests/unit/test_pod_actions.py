"""The last check before a worker's pod is deleted, for a worker without the retire
handshake (Bifrost's): the heartbeat snapshot, read from Redis just before the
delete, must show it runs nothing, by a fresh heartbeat (fakes behind the
Commands and KubeApi ports; the real Redis side is in the e2e tests)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from workerpool.contracts.report import ExecutionReport, ProcessReport, WorkerReport
from workerpool.contracts.resource import WorkerPool
from workerpool.contracts.wire import WireFormatError
from workerpool.controller.loop import pod_actions
from workerpool.controller.loop.api_io import EventEmitter
from workerpool.controller.loop.pod_actions import PodActions
from workerpool.controller.loop.state import PoolState
from workerpool.controller.ports import PublishOnce
from workerpool.decide.pods import PoolRef
from workerpool.decide.reasons import DeletionReason
from workerpool.decide.scaling import Deletion, ScalePlan

from .test_pool_controller import FakeClock, FakeKube

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def report(*, running: bool, age: float = 1.0) -> WorkerReport:
    procs = (ProcessReport(7, "process-1", "busy", 1.0, 1.0, 0, ExecutionReport("e-1", NOW, 1.0)),) if running else ()
    return WorkerReport(
        worker_id="b-1",
        started_at=NOW,
        hostname="b-1",
        pool_size=len(procs),
        idle_count=0,
        busy_count=len(procs),
        processes=procs,
        reported_at=NOW - dt.timedelta(seconds=age),
    )


class SnapshotCommands:
    """Bifrost's worker: no handshake; `report` is what its snapshot key holds now."""

    has_handshake = False

    def __init__(self, now: WorkerReport | Exception | None) -> None:
        self.now = now
        self.retired: list[str] = []

    async def report(self, worker_id: str) -> WorkerReport | None:
        if isinstance(self.now, Exception):
            raise self.now
        return self.now

    async def retire(self, worker_id: str, queue_key: str, ttl_seconds: int) -> bool:
        raise AssertionError("no retire script for a worker without the handshake")

    async def unretire(self, worker_id: str, queue_key: str) -> None:
        raise AssertionError("nothing to undo")

    async def retire_for_eviction(self, worker_id: str, queue_key: str, ttl_seconds: int) -> list[str]:
        raise AssertionError("not here")

    async def publish_once(self, *args: Any) -> PublishOnce:
        raise AssertionError("not here")


POOL = WorkerPool.from_body(
    {
        "metadata": {"name": "b", "namespace": "ns", "uid": "u"},
        "spec": {
            "protocol": "bifrost",
            "heartbeatIntervalSeconds": 2,
            "redis": {"url": "redis://r/0"},
            "rabbitmq": {"url": "amqp://r/", "queues": ["workflow-executions"]},
            "template": {"spec": {"containers": [{"name": "worker", "image": "bifrost"}]}},
        },
    }
)


def idle_worker() -> tuple[FakeClock, FakeKube, PoolState, PodActions]:
    """One pod b-1 whose worker's last heartbeat (2 s old) showed it idle, and the actions on it."""
    clock, kube = FakeClock(), FakeKube()
    clock.wall = NOW.timestamp()
    kube.pods["b-1"] = {"metadata": {"name": "b-1"}}
    state = PoolState("u", lambda: None, clock)
    state.on_heartbeat(report(running=False, age=2))  # the idle heartbeat the plan was decided on
    return clock, kube, state, PodActions(kube, state, EventEmitter(kube, "ns", "b", clock), "img")


async def delete_one(snapshot: WorkerReport | Exception | None, then: Any) -> list[str]:
    """Scale-down rounds for one idle worker: the first reads its snapshot and never waits; `then(state)`
    plays what arrives next (a heartbeat...); the rounds after it delete or keep the pod by that."""
    clock, kube, state, actions = idle_worker()
    plan = ScalePlan(desired=0, demand=0, delete=[Deletion("b-1", "pod-uid", DeletionReason.SCALE_DOWN)])
    commands = SnapshotCommands(snapshot)

    async def round_() -> None:
        # A round never waits for a worker: bounded by the fakes' own instant answers.
        await asyncio.wait_for(actions.apply(POOL, PoolRef("b", "ns", "u"), plan, commands, None), timeout=1)

    await round_()
    if then is None:  # decided by the snapshot alone
        assert "b-1" not in state.confirming
        return kube.deleted
    assert "b-1" in state.confirming and not kube.deleted, "deleted before the next heartbeat"
    await round_()  # a round before that heartbeat: still waiting, still there
    assert not kube.deleted
    clock.advance(1)
    then(state)
    await round_()
    return kube.deleted


@pytest.mark.parametrize(
    ("snapshot", "then", "deleted"),
    [
        # Idle by its snapshot, and by the heartbeat it sends next: deleted right after that one.
        (report(running=False), lambda s: s.on_heartbeat(report(running=False, age=0)), True),
        # Idle by its snapshot, busy by its next heartbeat (a delivery since): kept.
        (report(running=False), lambda s: s.on_heartbeat(report(running=True, age=0)), False),
        # It said it went offline meanwhile: nothing runs there.
        (report(running=False), lambda s: s.on_offline("b-1"), True),
        (None, None, True),  # no registration, no snapshot: runs nothing
        (report(running=True), None, False),  # turned busy since the decision
        (report(running=False, age=60), None, False),  # idle, but too old to trust
        (WireFormatError("bifrost:pool:b-1:heartbeat: not valid JSON"), None, False),
    ],
)
async def test_a_worker_without_the_handshake_is_deleted_only_when_it_runs_nothing_by_its_latest_word(
    snapshot: WorkerReport | Exception | None, then: Any, deleted: bool
) -> None:
    assert await delete_one(snapshot, then) == (["b-1"] if deleted else [])


async def test_no_next_heartbeat_keeps_the_worker_and_the_deadline_is_a_wake_up() -> None:
    """Virtual time: past one interval and the slack without a report, the round keeps it."""
    clock, kube, state, actions = idle_worker()
    plan = ScalePlan(desired=0, demand=0, delete=[Deletion("b-1", "pod-uid", DeletionReason.SCALE_DOWN)])
    commands = SnapshotCommands(report(running=False))
    await actions.apply(POOL, PoolRef("b", "ns", "u"), plan, commands, None)
    due = actions.confirmation_due(POOL)
    assert due == clock.monotonic() + 2 + pod_actions.NEXT_HEARTBEAT_SLACK  # the controller wakes then
    clock.advance(2 + pod_actions.NEXT_HEARTBEAT_SLACK + 0.1)
    await actions.apply(POOL, PoolRef("b", "ns", "u"), plan, commands, None)
    assert kube.deleted == [] and state.confirming == {}


async def test_a_confirmation_the_plan_no_longer_asks_for_is_dropped() -> None:
    clock, kube = FakeClock(), FakeKube()
    kube.pods["b-1"] = {"metadata": {"name": "b-1"}}
    state = PoolState("u", lambda: None, clock)
    actions = PodActions(kube, state, EventEmitter(kube, "ns", "b", clock), "img")
    state.confirming["b-1"] = clock.monotonic()
    await actions.apply(POOL, PoolRef("b", "ns", "u"), ScalePlan(desired=1, demand=1), SnapshotCommands(None), None)
    assert state.confirming == {}


async def test_a_deletion_awaiting_its_heartbeat_never_holds_back_the_rounds_creates() -> None:
    """heartbeatIntervalSeconds 300: a round that starts a confirmation still creates its pods at
    once, and so does every round after it while the worker's next heartbeat is minutes away."""
    slow = WorkerPool.from_body(
        {**POOL.model_dump(), "metadata": {"name": "b", "namespace": "ns", "uid": "u"},
         "spec": {**POOL.spec.model_dump(by_alias=True, exclude_none=True), "heartbeatIntervalSeconds": 300}}
    )  # fmt: skip
    clock, kube, state, actions = idle_worker()
    commands = SnapshotCommands(report(running=False))
    for created in (1, 2, 3):
        plan = ScalePlan(
            desired=1, demand=1, create=1, delete=[Deletion("b-1", "pod-uid", DeletionReason.REPLACE_OUTDATED)]
        )
        await asyncio.wait_for(actions.apply(slow, PoolRef("b", "ns", "u"), plan, commands, None), timeout=1)
        assert len(kube.pods) == 1 + created and kube.deleted == []
        clock.advance(60)
    assert "b-1" in state.confirming  # still waiting for its next report, minutes later


def removing_b1(reason: DeletionReason = DeletionReason.SCALE_DOWN) -> ScalePlan:
    return ScalePlan(
        desired=0,
        demand=0,
        delete=[Deletion("b-1", "pod-uid", reason)],
        removing={"b-1": "idle"},
        removal_numbers="demand 0",
        active=1,
    )


async def test_the_removal_event_names_only_pods_deleted_and_a_called_off_removal_is_counted() -> None:
    clock, kube, state, actions = idle_worker()
    commands = SnapshotCommands(report(running=False))
    await actions.apply(POOL, PoolRef("b", "ns", "u"), removing_b1(), commands, None)
    clock.advance(1)
    state.on_heartbeat(report(running=True, age=0))  # a delivery came in: the removal is off
    await actions.apply(POOL, PoolRef("b", "ns", "u"), removing_b1(), commands, None)
    assert kube.deleted == [] and state.called_off.recent() == 1
    assert not [e for e in kube.events if e[0] == "ScalingDown"], "a removal that did not happen was announced"
    # Idle again, and by the next heartbeat too: deleted, announced, and the called-off count cleared.
    state.on_heartbeat(report(running=False, age=0))
    await actions.apply(POOL, PoolRef("b", "ns", "u"), removing_b1(), commands, None)
    clock.advance(1)
    state.on_heartbeat(report(running=False, age=0))
    await actions.apply(POOL, PoolRef("b", "ns", "u"), removing_b1(), commands, None)
    assert kube.deleted == ["b-1"] and state.called_off.recent() == 0
    (announced,) = [message for reason, message in kube.events if reason == "ScalingDown"]
    assert announced.startswith("Scaling down from 1 to 0 workers (desired 0), removed b-1 (idle)")


async def test_a_worker_that_drains_on_sigterm_is_deleted_busy_without_reading_redis() -> None:
    draining = WorkerPool.from_body(
        {"metadata": {"name": "b", "namespace": "ns", "uid": "u"},
         "spec": {**POOL.spec.model_dump(by_alias=True, exclude_none=True), "drainsOnSigterm": True}}
    )  # fmt: skip
    _clock, kube, state, actions = idle_worker()
    state.on_heartbeat(report(running=True, age=0))
    commands = SnapshotCommands(AssertionError("no snapshot read: its SIGTERM retires it"))
    await asyncio.wait_for(actions.apply(draining, PoolRef("b", "ns", "u"), removing_b1(), commands, None), 1)
    assert kube.deleted == ["b-1"] and state.confirming == {}


async def test_a_confirmation_dropped_because_its_worker_turned_busy_is_a_removal_called_off() -> None:
    """Steady traffic: each round chooses whichever worker is idle now; the one being confirmed turned
    busy meanwhile, so the plan moved on. That is a removal called off, counted for the status."""
    clock, kube, state, actions = idle_worker()
    await actions.apply(POOL, PoolRef("b", "ns", "u"), removing_b1(), SnapshotCommands(report(running=False)), None)
    assert "b-1" in state.confirming
    clock.advance(1)
    state.on_heartbeat(report(running=True, age=0))
    await actions.apply(POOL, PoolRef("b", "ns", "u"), ScalePlan(desired=0, demand=1), SnapshotCommands(None), None)
    assert state.confirming == {} and state.called_off.recent() == 1 and kube.deleted == []
