"""Scaling decisions: table tests and properties (desired within [min, max];
a busy or unknown worker is never chosen for deletion)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workerpool.contracts.resource import WorkerPoolSpec
from workerpool.contracts.wire import ExecutionInfo, ProcessInfo, QueueStatus, WorkerInfo
from workerpool.decide.observation import Observation, PodView, WorkerView
from workerpool.decide.scaling import ScaleMemory, decide_scale, recommend, removal_event
from workerpool.protocols.seed import report_of

NOW = 10_000.0
HASH = "h1"


def spec(**kw: Any) -> WorkerPoolSpec:
    base: dict[str, Any] = {
        "minWorkers": 1,
        "maxWorkers": 10,
        "processes": {"min": 1, "max": 4},
        "redis": {"url": "redis://r"},
        "scaling": {"scaleDownDelaySeconds": 60},
    }
    base.update(kw)
    return WorkerPoolSpec.model_validate(base)


def pod(
    name: str,
    *,
    phase: str = "Running",
    ready: bool = True,
    age: float = 100.0,
    terminating: bool = False,
    template_hash: str = HASH,
) -> PodView:
    return PodView(name, f"uid-{name}", phase, ready, terminating, NOW - age, template_hash)


def worker(name: str, busy: int = 0, idle: int = 1, fresh: bool = True) -> WorkerView:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    procs = [
        ProcessInfo(
            pid=100 + i,
            process_id=f"p{i}",
            state="busy",
            memory_mb=1,
            uptime_seconds=1,
            executions_completed=0,
            execution=ExecutionInfo(execution_id=f"e{i}", started_at=t, elapsed_seconds=1),
        )
        for i in range(busy)
    ]
    procs += [
        ProcessInfo(
            pid=200 + i, process_id=f"q{i}", state="idle", memory_mb=1, uptime_seconds=1, executions_completed=0
        )
        for i in range(idle)
    ]
    info = WorkerInfo(
        worker_id=name,
        started_at=t,
        hostname=name,
        pool_size=busy + idle,
        idle_count=idle,
        busy_count=busy,
        processes=procs,
    )
    return WorkerView(report_of(info, None, None, t), fresh)


def observe(pods: list[PodView], workers: dict[str, WorkerView], depth: int | None = 0, **kw: Any) -> Observation:
    queue = QueueStatus(depth=depth, oldest_age_seconds=0) if depth is not None else None
    return Observation(pods=tuple(pods), workers=workers, queue=queue, now=NOW, **kw)


@pytest.mark.parametrize(
    ("busy", "depth", "expected"),
    [(0, 0, 1), (1, 0, 1), (4, 0, 1), (5, 0, 2), (4, 4, 2), (0, 9, 3), (0, 1000, 10)],
)
def test_recommendation(busy: int, depth: int, expected: int) -> None:
    assert recommend(spec(), busy, depth) == expected


def test_scale_up_is_immediate_and_says_why() -> None:
    plan = decide_scale(spec(), observe([pod("a")], {"a": worker("a", busy=4, idle=0)}, depth=5), ScaleMemory(), HASH)
    assert (plan.desired, plan.create) == (3, 2)
    assert plan.events[0].reason == "ScalingUp"
    assert "4 busy + 5 queued = 9 processes, 4 per worker" in plan.events[0].message


def test_scale_down_waits_for_the_window_then_removes_only_idle() -> None:
    pods = [pod("a", age=300), pod("b", age=200), pod("c", age=100)]
    workers = {"a": worker("a", busy=1), "b": worker("b"), "c": worker("c")}
    memory = ScaleMemory(((NOW - 30, 3),))  # high demand 30 s ago, window 60 s
    plan = decide_scale(spec(), observe(pods, workers), memory, HASH)
    assert plan.desired == 3
    assert plan.delete == []
    later = decide_scale(spec(), observe(pods, workers), ScaleMemory(((NOW - 61, 3),)), HASH)
    assert later.desired == 1
    assert {d.name for d in later.delete} == {"b", "c"}  # never the busy "a"
    # No Event yet: a removal is announced once it happened (it can still be called off).
    assert all(e.reason != "ScalingDown" for e in later.events)
    event = removal_event(later, ["c"])
    assert event is not None and event.reason == "ScalingDown"
    assert event.message.startswith("Scaling down from 3 to 2 workers (desired 1), removed c (idle)")
    assert removal_event(later, []) is None


def test_stale_or_unknown_workers_are_not_idle() -> None:
    pods = [pod("a"), pod("b")]
    plan = decide_scale(
        spec(minWorkers=0),
        observe(pods, {"a": worker("a", fresh=False), "b": worker("b", busy=1)}),
        ScaleMemory(),
        HASH,
    )
    assert plan.desired == 1
    assert plan.delete == []
    assert plan.reconciling_reason == "WaitingForIdleWorkers"


def test_a_new_pool_says_it_creates_min_workers_not_that_it_scales_up() -> None:
    plan = decide_scale(spec(minWorkers=2), observe([], {}, depth=None), ScaleMemory(), HASH)
    assert plan.create == 2
    assert plan.events[0].message == "Creating 2 workers (minWorkers 2); demand not read yet"


def test_redis_unavailable_keeps_pods_and_min() -> None:
    plan = decide_scale(
        spec(minWorkers=2), observe([pod("a"), pod("b"), pod("c")], {}, depth=None), ScaleMemory(), HASH
    )
    assert (plan.desired, plan.create, plan.delete) == (3, 0, [])
    plan = decide_scale(spec(minWorkers=2), observe([], {}, depth=None), ScaleMemory(), HASH)
    assert (plan.desired, plan.create) == (2, 2)


def test_pods_that_never_became_workers_go_first() -> None:
    pods = [pod("pending", phase="Pending", ready=False, age=5), pod("idle"), pod("young", age=1)]
    plan = decide_scale(
        spec(minWorkers=1, scaling={"scaleDownDelaySeconds": 0}),
        observe(pods, {"idle": worker("idle")}),
        ScaleMemory(),
        HASH,
    )
    # First the pod that never ran, then the idle worker; "young" may be about to
    # register (and may already hold an execution): it is not touched.
    assert [d.name for d in plan.delete] == ["pending", "idle"]
    # The Event says what each removed pod was: a Pending pod is not "idle".
    event = removal_event(plan, ["pending", "idle"])
    assert event is not None and "removed pending (not running), idle (idle):" in event.message


def test_failed_pods_are_replaced() -> None:
    plan = decide_scale(spec(), observe([pod("a", phase="Failed"), pod("b")], {"b": worker("b")}), ScaleMemory(), HASH)
    assert [d.reason for d in plan.delete] == ["ReplaceFailed"]
    assert plan.create == 0  # b alone meets desired 1


def test_outdated_pods_get_a_surge_then_idle_ones_go() -> None:
    s = spec(scaling={"scaleDownDelaySeconds": 0})
    busy_old = decide_scale(
        s, observe([pod("old", template_hash="h0")], {"old": worker("old", busy=1, idle=0)}), ScaleMemory(), HASH
    )
    assert (busy_old.create, busy_old.delete) == (1, [])
    both = decide_scale(
        s,
        observe(
            [pod("old", template_hash="h0"), pod("new")], {"old": worker("old", busy=1, idle=0), "new": worker("new")}
        ),
        ScaleMemory(),
        HASH,
    )
    assert both.delete == []  # the busy outdated pod stays; the surge pod is not removed instead
    idle_old = decide_scale(
        s,
        observe([pod("old", template_hash="h0"), pod("new")], {"old": worker("old"), "new": worker("new")}),
        ScaleMemory(),
        HASH,
    )
    assert [(d.name, d.reason) for d in idle_old.delete] == [("old", "ReplaceOutdated")]


# --- properties -----------------------------------------------------------------------------

pod_strategy = st.builds(
    lambda i, phase, ready, term, h, age: pod(
        f"p{i}", phase=phase, ready=ready, terminating=term, template_hash=h, age=age
    ),
    st.integers(0, 30),
    st.sampled_from(["Pending", "Running", "Failed", "Succeeded"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([HASH, "old"]),
    st.floats(0, 1000),
)


@settings(max_examples=400)
@given(
    pods=st.lists(pod_strategy, max_size=12, unique_by=lambda p: p.name),
    worker_states=st.dictionaries(
        st.integers(0, 30), st.tuples(st.integers(0, 4), st.integers(0, 4), st.booleans()), max_size=12
    ),
    depth=st.one_of(st.none(), st.integers(0, 500)),
    bounds=st.tuples(st.integers(0, 6), st.integers(0, 6)).map(sorted),
    cap=st.integers(1, 8),
    delay=st.integers(0, 120),
    memory=st.lists(st.tuples(st.floats(NOW - 300, NOW), st.integers(0, 20)), max_size=5),
)
def test_properties(
    pods: list[PodView],
    worker_states: dict[int, tuple[int, int, bool]],
    depth: int | None,
    bounds: list[int],
    cap: int,
    delay: int,
    memory: list[tuple[float, int]],
) -> None:
    s = spec(
        minWorkers=bounds[0],
        maxWorkers=bounds[1],
        processes={"min": 1, "max": cap},
        scaling={"scaleDownDelaySeconds": delay},
    )
    workers = {f"p{i}": worker(f"p{i}", busy=b, idle=i_, fresh=f) for i, (b, i_, f) in worker_states.items()}
    obs = observe(pods, workers, depth=depth)
    plan = decide_scale(s, obs, ScaleMemory(tuple(memory)), HASH)
    assert s.min_workers <= plan.desired <= s.max_workers
    by_name = {p.name: p for p in pods}
    for d in plan.delete:
        p = by_name[d.name]
        if d.reason == "ReplaceFailed":
            assert p.phase in ("Failed", "Succeeded")
            continue
        w = workers.get(d.name)
        # Never a busy worker, never one whose idleness is not known from a fresh heartbeat.
        assert w is None or (w.fresh and w.info.busy_count == 0)
        assert depth is not None  # no scale-down while Redis is unknown
    active = sum(1 for p in pods if p.active)
    if depth is None:
        assert all(d.reason == "ReplaceFailed" for d in plan.delete)
    assert active + plan.create - len([d for d in plan.delete if d.reason != "ReplaceFailed"]) >= min(
        plan.desired, active + plan.create
    )


def test_recheck_is_scheduled_when_the_window_will_lower_desired() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    workers = {n: worker(n) for n in "abc"}
    plan = decide_scale(spec(), observe(pods, workers), ScaleMemory(((NOW - 45, 3),)), HASH)
    assert plan.desired == 3
    assert plan.recheck_after == pytest.approx(15)  # window 60 s, high demand 45 s ago
    steady = decide_scale(spec(), observe([pod("a")], {"a": worker("a")}), ScaleMemory(), HASH)
    assert steady.recheck_after is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(0, 12)), min_size=1, max_size=60),
    st.floats(0.5, 100.0),
)
def test_the_window_memory_keeps_the_highest_recommendation_of_the_window(
    steps: list[tuple[float, int]], window: float
) -> None:
    """The bounded memory answers what keeping every recommendation answered: the highest one
    recommended within the window, and the moment it leaves the window."""
    memory, everything, now = ScaleMemory(), [], 0.0
    for gap, value in steps:
        now += gap
        memory = memory.record(now, value, window)
        everything.append((now, value))
        inside = [(t, n) for t, n in everything if now - t < window]
        highest = max(n for _, n in inside)
        assert memory.highest[1] == highest
        # When it leaves: the last of the window's readings of that value (a later equal one keeps it up).
        assert memory.highest[0] == max(t for t, n in inside if n == highest)
        assert len(memory.recommendations) <= len({n for _, n in inside})


def test_a_day_long_window_with_a_reading_every_250_ms_keeps_a_few_entries() -> None:
    memory = ScaleMemory()
    for i in range(345_600):  # 24 h of readings, the demand going round 0..9
        memory = memory.record(i * 0.25, i % 10, 86_400.0)
    assert len(memory.recommendations) <= 10
    assert memory.highest[1] == 9


def bifrost_spec(**kw: Any) -> WorkerPoolSpec:
    base: dict[str, Any] = {
        "protocol": "bifrost",
        "rabbitmq": {"url": "amqp://r", "queues": ["q"]},
        "template": {"spec": {"containers": [{"name": "worker", "image": "w"}]}},
    }
    base.update(kw)
    return spec(**base)


def test_a_worker_that_drains_on_sigterm_is_removed_busy_the_least_busy_first() -> None:
    pods = [pod("a", age=300), pod("b", age=200), pod("c", age=100)]
    workers = {"a": worker("a", busy=3), "b": worker("b", busy=1), "c": worker("c", busy=2)}
    # Steady traffic: 6 busy of 4 per worker -> desired 2; no worker is ever idle.
    killing = decide_scale(bifrost_spec(), observe(pods, workers), ScaleMemory(), HASH)
    assert (killing.desired, killing.delete) == (2, [])
    assert killing.reconciling_reason == "WaitingForIdleWorkers"
    draining = decide_scale(bifrost_spec(drainsOnSigterm=True), observe(pods, workers), ScaleMemory(), HASH)
    assert [d.name for d in draining.delete] == ["b"]  # the least busy
    assert draining.removing == {"b": "busy, drains on SIGTERM"}


def test_a_draining_worker_that_is_not_fresh_is_not_removed() -> None:
    pods = [pod("a"), pod("b")]
    workers = {"a": worker("a", busy=1), "b": worker("b", busy=1, fresh=False)}
    plan = decide_scale(bifrost_spec(drainsOnSigterm=True, minWorkers=0), observe(pods, workers), ScaleMemory(), HASH)
    assert [d.name for d in plan.delete] == ["a"]  # b's state is unknown: kept


def test_what_a_leaving_pod_runs_is_no_demand() -> None:
    # "b" is terminating with 4 busy: its executions finish there; one active worker is enough.
    pods = [pod("a"), pod("b", terminating=True)]
    workers = {"a": worker("a", busy=1), "b": worker("b", busy=4, idle=0)}
    plan = decide_scale(spec(minWorkers=1), observe(pods, workers), ScaleMemory(), HASH)
    assert (plan.desired, plan.create) == (1, 0)


def test_drains_on_sigterm_is_for_bifrost_and_needs_a_grace_period_past_the_drain() -> None:
    with pytest.raises(ValueError, match="drainsOnSigterm is for protocol bifrost"):
        spec(drainsOnSigterm=True)
    short = {"spec": {"terminationGracePeriodSeconds": 305, "containers": [{"name": "w", "image": "w"}]}}
    with pytest.raises(ValueError, match="must exceed executionTimeoutSeconds"):
        bifrost_spec(drainsOnSigterm=True, template=short)
    long = {"spec": {"terminationGracePeriodSeconds": 306, "containers": [{"name": "w", "image": "w"}]}}
    assert bifrost_spec(drainsOnSigterm=True, template=long).drains_on_sigterm
