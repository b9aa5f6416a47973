"""The node-autoscaler marks on busy workers (decide/disruption.py), as plain data."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from devcluster.heartbeats import heartbeat
from workerpool.contracts import names
from workerpool.decide.disruption import MAX_STRETCH, MarkMemory, MarkPolicy, decide_marks, managed_keys, under_backlog
from workerpool.decide.observation import PodView, WorkerView
from workerpool.protocols.seed import heartbeat_report

KEYS = managed_keys({})
MARKS = tuple(names.BUSY_MARKS)
AT = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
HOLD = MarkPolicy(hold_down_seconds=60)


def pod(name: str, marked: bool, terminating: bool = False) -> PodView:
    return PodView(name, f"uid-{name}", "Running", True, terminating, 0.0, None, marks=MARKS if marked else ())


def worker(name: str, busy: bool, fresh: bool = True) -> WorkerView:
    return WorkerView(heartbeat_report(heartbeat(name, busy, AT, "p", "ns")), fresh=fresh)


def test_busy_is_marked_at_once_idle_only_after_the_hold_down() -> None:
    plan = decide_marks([pod("a", False)], {"a": worker("a", True)}, 100.0, MarkMemory(), HOLD, KEYS)
    assert [(c.pod, c.patch) for c in plan.changes] == [("a", dict(MARKS))]
    idle = {"a": worker("a", False)}
    plan = decide_marks([pod("a", True)], idle, 100.0, MarkMemory(), HOLD, KEYS)
    assert plan.changes == () and plan.recheck_after == 60 and plan.memory.idle_since == {"uid-a": 100.0}
    plan = decide_marks([pod("a", True)], idle, 160.0, plan.memory, HOLD, KEYS)
    assert [(c.pod, c.patch) for c in plan.changes] == [("a", dict.fromkeys(dict(MARKS)))]


def test_unknown_terminating_and_unregistered_pods_are_left_as_they_are() -> None:
    pods = [pod("stale", True), pod("gone", True, terminating=True), pod("new", False)]
    workers = {"stale": worker("stale", False, fresh=False), "gone": worker("gone", False)}
    memory = MarkMemory({"uid-stale": 0.0})
    plan = decide_marks(pods, workers, 1000.0, memory, HOLD, KEYS)
    assert plan.changes == () and plan.memory.idle_since == {}  # unknown restarts the hold-down


def test_switched_off_removes_the_marks_it_finds() -> None:
    off = MarkPolicy(enabled=False)
    plan = decide_marks([pod("a", True), pod("b", False)], {"a": worker("a", True)}, 0.0, MarkMemory(), off, KEYS)
    assert [(c.pod, c.mark) for c in plan.changes] == [("a", False)]


def test_keys_the_template_sets_are_not_managed() -> None:
    assert managed_keys({names.DO_NOT_DISRUPT_ANNOTATION: "true"}) == (names.SAFE_TO_EVICT_ANNOTATION,)
    both = {k: v for k, v in MARKS}
    assert (
        decide_marks([pod("a", False)], {"a": worker("a", True)}, 0.0, MarkMemory(), HOLD, managed_keys(both)).changes
        == ()
    )


# One pod's worker over time: each second a heartbeat (busy, idle, or none: stale).
beats = st.lists(st.sampled_from(["busy", "idle", "stale"]), min_size=1, max_size=400)


@settings(max_examples=300, deadline=None)
@given(beats, st.integers(min_value=1, max_value=90))
def test_never_unmarked_while_busy_and_writes_bounded_by_the_busy_spells(seq: list[str], hold: int) -> None:
    """Applying every plan: a busy worker ends each round marked; an unmark comes only after
    `hold` seconds of fresh idle heartbeats; so writes <= 2 per busy spell separated by `hold` idle."""
    policy = MarkPolicy(hold_down_seconds=hold)
    marked, memory, writes, idle_run = False, MarkMemory(), 0, 0
    for t, state in enumerate(seq):
        workers = {"a": worker("a", state == "busy", fresh=state != "stale")}
        plan = decide_marks([pod("a", marked)], workers, float(t), memory, policy, KEYS)
        memory = plan.memory
        for change in plan.changes:
            assert change.mark != marked
            assert change.mark or idle_run >= hold, "unmarked before the hold-down ran out"
            marked, writes = change.mark, writes + 1
        idle_run = idle_run + 1 if state == "idle" else 0
        if state == "busy":
            assert marked
    spells = sum(1 for i, s in enumerate(seq) if s == "busy" and (i == 0 or seq[i - 1] != "busy"))
    assert writes <= 2 * spells


@given(
    hold_down=st.floats(0, 3600),
    backlog=st.integers(-10, 100_000),
    more=st.integers(0, 10_000),
)
def test_the_hold_down_stretches_with_the_write_backlog_within_bounds(
    hold_down: float, backlog: int, more: int
) -> None:
    """Behind on writes, unmarks wait longer (never shorter than set, at most 10x, never less for more backlog)."""
    policy = MarkPolicy(hold_down_seconds=hold_down)
    stretched = under_backlog(policy, backlog).hold_down_seconds
    assert hold_down <= stretched <= MAX_STRETCH * hold_down
    assert under_backlog(policy, backlog + more).hold_down_seconds >= stretched
    assert under_backlog(policy, 0) == policy  # no backlog: exactly the setting


def test_a_backlog_delays_the_unmark_of_an_idle_worker() -> None:
    policy = MarkPolicy(hold_down_seconds=60)
    assert under_backlog(policy, 99).hold_down_seconds == 60
    assert under_backlog(policy, 250).hold_down_seconds == 180
    assert under_backlog(policy, 10**6).hold_down_seconds == 600
