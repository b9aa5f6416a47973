"""The resync merge and the status merge patch: table tests of the pure functions."""

from __future__ import annotations

import datetime as dt

import pytest

from workerpool.contracts.report import WorkerReport
from workerpool.contracts.wire import Registration, WorkerInfo
from workerpool.decide.resync import Tracked, merge_resync
from workerpool.protocols.seed import registration_report

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
NOW_WALL = T0.timestamp() + 10
NOW_MONO = 5000.0


def info(worker: str, busy: int = 0) -> WorkerInfo:
    return WorkerInfo.model_validate(
        {
            "worker_id": worker,
            "started_at": T0.isoformat(),
            "hostname": worker,
            "min_workers": 1,
            "max_workers": 1,
            "pool_size": 1,
            "idle_count": 1 - busy,
            "busy_count": busy,
            "processes": [],
        }
    )


def reg(worker: str, at: float, busy: int = 0) -> WorkerReport:
    return registration_report(Registration(info=info(worker, busy), heartbeat_at=T0 + dt.timedelta(seconds=at)))


def known(worker: str, at: float, busy: int = 0, seen: float = NOW_MONO - 1) -> Tracked:
    return Tracked(reg(worker, at, busy), seen, T0 + dt.timedelta(seconds=at))


def test_a_worker_heard_lately_is_kept_as_is() -> None:
    before = {"a": known("a", at=9)}
    merged, changed = merge_resync(before, {"a"}, {}, NOW_MONO, NOW_WALL)
    assert merged == before and not changed


def test_a_worker_no_longer_registered_is_dropped() -> None:
    merged, changed = merge_resync({"a": known("a", at=9), "b": known("b", at=9)}, {"a"}, {}, NOW_MONO, NOW_WALL)
    assert set(merged) == {"a"} and changed


@pytest.mark.parametrize(
    ("reread_at", "reread_busy", "kept_busy", "changed"),
    [
        (8, 1, 0, False),  # older than what pub/sub delivered: ignored
        (9, 1, 0, False),  # the same report: ignored
        (10, 1, 1, True),  # newer and different: taken, significant
        (10, 0, 0, False),  # newer but the same shape: taken, not significant
    ],
)
def test_a_reread_report_replaces_only_an_older_one(
    reread_at: float, reread_busy: int, kept_busy: int, changed: bool
) -> None:
    before = {"a": known("a", at=9)}
    merged, did_change = merge_resync(before, {"a"}, {"a": reg("a", reread_at, reread_busy)}, NOW_MONO, NOW_WALL)
    assert merged["a"].info.busy_count == kept_busy
    assert did_change is changed


def test_first_sight_is_as_fresh_as_its_heartbeat() -> None:
    merged, changed = merge_resync({}, {"a"}, {"a": reg("a", at=4)}, NOW_MONO, NOW_WALL)
    assert changed
    assert merged["a"].last_seen == pytest.approx(NOW_MONO - 6)  # heartbeat 6 s before now
