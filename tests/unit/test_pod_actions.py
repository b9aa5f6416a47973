"""The last check before a worker's pod is deleted, for a worker without the retire
handshake (Bifrost's): the heartbeat snapshot, read from Redis just before the
delete, must show it runs nothing, by a fresh heartbeat (fakes behind the
Commands and KubeApi ports; the real Redis side is in the e2e tests)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from workerpool.contracts.report import ExecutionReport, ProcessReport, WorkerReport
from workerpool.contracts.resource import WorkerPool
from workerpool.contracts.wire import WireFormatError
from workerpool.controller.pod_actions import PodActions
from workerpool.controller.pool_io import EventEmitter
from workerpool.controller.pool_state import PoolState
from workerpool.decide.pods import PoolRef
from workerpool.decide.reasons import DeletionReason
from workerpool.decide.scaling import Deletion, ScalePlan

from .test_pool_controller import FakeClock, FakeKube

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def report(*, running: bool, age: float = 1.0) -> WorkerReport:
    procs = (
        (ProcessReport(7, "process-1", "busy", 1.0, 1.0, 0, ExecutionReport("e-1", NOW, 1.0)),) if running else ()
    )
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

    async def publish_once(self, *args: Any) -> tuple[bool, str]:
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


@pytest.mark.parametrize(
    ("snapshot", "deleted"),
    [
        (report(running=False), True),  # idle now, by a fresh heartbeat
        (None, True),  # no registration, no snapshot: runs nothing
        (report(running=True), False),  # turned busy since the decision
        (report(running=False, age=60), False),  # idle, but too old to trust
        (WireFormatError("bifrost:pool:b-1:heartbeat: not valid JSON"), False),
    ],
)
async def test_a_worker_without_the_handshake_is_deleted_only_if_its_snapshot_says_it_runs_nothing(
    snapshot: WorkerReport | Exception | None, deleted: bool
) -> None:
    clock, kube = FakeClock(), FakeKube()
    clock.wall = NOW.timestamp()
    kube.pods["b-1"] = {"metadata": {"name": "b-1"}}
    state = PoolState("u", lambda: None, clock)
    actions = PodActions(kube, state, EventEmitter(kube, "ns", "b", clock), "img")
    plan = ScalePlan(desired=0, demand=0, delete=[Deletion("b-1", "pod-uid", DeletionReason.SCALE_DOWN)])
    await actions.apply(POOL, PoolRef("b", "ns", "u"), plan, SnapshotCommands(snapshot), None)
    assert kube.deleted == (["b-1"] if deleted else [])
