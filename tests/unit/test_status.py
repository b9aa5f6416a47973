"""Status building and the write policy."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.contracts.resource import Condition
from workerpool.contracts.wire import QueueStatus
from workerpool.decide.observation import Observation, PodView
from workerpool.decide.scaling import ScalePlan
from workerpool.decide.status import (
    MAX_DETAIL_WORKERS,
    Stall,
    WritePolicy,
    build_status,
    merge_patch,
    render,
    should_write,
    significant,
)

from .test_scaling import worker

NOW = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


def status(n: int = 2, **kw: Any) -> dict[str, Any]:
    pods = tuple(PodView(f"w{i}", f"u{i}", "Running", True, False, 0.0, "h") for i in range(n))
    obs = Observation(
        pods=pods,
        workers={f"w{i}": worker(f"w{i}", busy=1, idle=1) for i in range(n)},
        queue=QueueStatus(depth=3, oldest_age_seconds=1.5),
    )
    args: dict[str, Any] = {
        "generation": 4,
        "obs": obs,
        "plan": ScalePlan(desired=n, demand=5),
        "stall": None,
        "last_recycle": None,
        "previous_conditions": [],
        "now": NOW,
    }
    args.update(kw)
    return render(build_status(**args))


def cond(s: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in s["conditions"] if c["type"] == type_)


def test_sums_and_conditions() -> None:
    s = status()
    assert (s["workers"], s["readyWorkers"], s["poolSize"], s["idleCount"], s["busyCount"]) == (2, 2, 4, 2, 2)
    assert s["queue"] == {"depth": 3, "oldestAgeSeconds": 1.5}
    assert s["observedGeneration"] == 4
    assert cond(s, "Ready")["status"] == "True"
    assert cond(s, "Reconciling")["status"] == "False"
    assert cond(s, "Stalled")["status"] == "False"
    assert all(c["observedGeneration"] == 4 for c in s["conditions"])


def test_a_running_worker_without_a_fresh_heartbeat_is_named_and_not_counted() -> None:
    pods = tuple(PodView(f"w{i}", f"u{i}", "Running", True, False, 0.0, "h") for i in range(2))
    obs = Observation(pods=pods, workers={"w0": worker("w0"), "w1": worker("w1", fresh=False)})
    s = status(obs=obs)
    assert s["readyWorkers"] == 1
    ready = cond(s, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForWorkers")
    assert ready["message"] == "1 of 2 workers are running and registered; no fresh heartbeat from w1"
    # When it is heard from again, it counts again.
    healed = Observation(pods=pods, workers={"w0": worker("w0"), "w1": worker("w1")})
    assert cond(status(obs=healed), "Ready")["message"] == "2 of 2 workers are running and registered"


def test_stalled_makes_ready_false_with_the_reason() -> None:
    s = status(stall=Stall("RedisUnavailable", "connection refused"))
    assert (cond(s, "Ready")["status"], cond(s, "Ready")["reason"]) == ("False", "RedisUnavailable")
    assert cond(s, "Stalled")["status"] == "True"


def test_transition_time_moves_only_on_flips() -> None:
    earlier = NOW - dt.timedelta(hours=1)
    prev = [
        Condition(type="Ready", status="True", reason="x", last_transition_time=earlier),
        Condition(type="Stalled", status="True", reason="x", last_transition_time=earlier),
    ]
    s = status(previous_conditions=prev)
    assert cond(s, "Ready")["lastTransitionTime"] == "2026-11-26T09:00:00Z"
    assert cond(s, "Stalled")["lastTransitionTime"] == "2026-11-26T10:00:00Z"


def test_details_are_bounded_but_sums_exact() -> None:
    s = status(n=MAX_DETAIL_WORKERS + 25)
    assert len(s["workerDetails"]) == MAX_DETAIL_WORKERS
    assert s["workerDetailsOmitted"] == 25
    assert s["busyCount"] == MAX_DETAIL_WORKERS + 25


def test_size_at_500_workers_of_20_processes_is_far_below_etcd_limit() -> None:
    import json

    from workerpool.decide.observation import Observation as Obs

    from .test_scaling import worker as w

    pods = tuple(PodView(f"w{i}", f"u{i}", "Running", True, False, 0.0, "h") for i in range(500))
    obs = Obs(
        pods=pods,
        workers={f"w{i}": w(f"w{i}", busy=10, idle=10) for i in range(500)},
        queue=QueueStatus(depth=0, oldest_age_seconds=0),
    )
    s = render(
        build_status(
            generation=1,
            obs=obs,
            plan=ScalePlan(desired=500, demand=5000),
            stall=None,
            last_recycle=None,
            previous_conditions=[],
            now=NOW,
        )
    )
    assert s["poolSize"] == 10000
    assert len(json.dumps(s)) < 512 * 1024


def test_volatile_gauges_are_not_significant() -> None:
    a = status()
    b = status()
    b["workerDetails"][0]["processes"][0]["memoryMb"] = 999
    b["queue"]["oldestAgeSeconds"] = 99
    assert significant(a) == significant(b)
    # Another execution on a process that was busy already: churn, not a change of shape.
    busy = next(p for p in a["workerDetails"][0]["processes"] if p.get("execution"))
    again = next(p for p in b["workerDetails"][0]["processes"] if p["pid"] == busy["pid"])
    again["execution"] = {**busy["execution"], "executionId": "e-next"}
    again["executionsCompleted"] = busy["executionsCompleted"] + 1
    assert significant(a) == significant(b)
    b["workerDetails"][0]["processes"][1]["state"] = "busy"
    assert significant(a) != significant(b)


_GAUGES = ("memoryMb", "uptimeSeconds", "elapsedSeconds", "oldestAgeSeconds", "executionsCompleted")


def _without_gauges(rendered: dict[str, Any]) -> dict[str, Any]:
    """The obvious (slow) definition: a deep copy with every gauge removed."""
    out = copy.deepcopy(rendered)
    out.get("queue", {}).pop("oldestAgeSeconds", None)
    for detail in out.get("workerDetails", []):
        for proc in detail["processes"]:
            proc.pop("memoryMb", None)
            proc.pop("uptimeSeconds", None)
            proc.pop("executionsCompleted", None)
            if "execution" in proc:
                proc["execution"] = proc["execution"] is not None
    return out


@given(
    n=st.integers(min_value=0, max_value=4),
    changes=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1), st.sampled_from([*_GAUGES, "state", "pid"]), st.integers()),
        max_size=6,
    ),
)
def test_significant_is_the_status_without_gauges_and_never_mutates(n: int, changes: list[Any]) -> None:
    rendered = status(n)
    for w, p, key, value in changes:
        if key == "oldestAgeSeconds":
            rendered["queue"][key] = value
        elif w < len(rendered["workerDetails"]):
            proc = rendered["workerDetails"][w]["processes"][p]
            if key == "elapsedSeconds":
                proc["execution"] = {"executionId": f"e{value}", "elapsedSeconds": value}
            else:
                proc[key] = value
    before = copy.deepcopy(rendered)
    assert significant(rendered) == _without_gauges(rendered)
    assert rendered == before, "significant() must not change its input"


def test_write_policy() -> None:
    p = WritePolicy(min_interval=1, volatile_refresh=30)
    a = status()
    vol = status()
    vol["workerDetails"][0]["processes"][0]["memoryMb"] = 5
    sig = status()
    sig["busyCount"] = 0
    assert should_write(a, None, 0, 100, p) == (True, 0.0)
    assert should_write(a, a, 0, 100, p)[0] is False
    assert should_write(vol, a, 90, 100, p) == (False, 20)  # gauges only: wait for the slow refresh
    assert should_write(vol, a, 60, 100, p)[0] is True
    assert should_write(sig, a, 99.5, 100, p) == (False, 0.5)  # at most about one write per second
    assert should_write(sig, a, 98, 100, p)[0] is True


@pytest.mark.parametrize(
    ("rendered", "last", "patch"),
    [
        ({"workers": 1}, None, {"workers": 1}),
        ({"workers": 1}, {"workers": 2, "queue": {"depth": 3}}, {"workers": 1, "queue": None}),
        ({"queue": {"depth": 0}}, {"queue": {"depth": 3, "oldestAgeSeconds": 1}}, {"queue": {"depth": 0}}),
    ],
)
def test_status_merge_patch_removes_what_the_new_status_lacks(
    rendered: dict[str, object], last: dict[str, object] | None, patch: dict[str, object]
) -> None:
    assert merge_patch(rendered, last) == patch
