"""Scaling decisions (DESIGN §5): how many workers, which pods to create or delete.

desired = ceil((busy processes + queue depth) / processes.max), within
[minWorkers, maxWorkers]. Up at once; down only after scaleDownDelaySeconds
of lower demand (the highest recommendation in that window wins, as in the
HPA's stabilization window), and only by removing workers that are idle by a
fresh heartbeat, or pods that never became a worker. Unknown is not idle:
without Redis there is no scale-down. A worker that drains on SIGTERM
(`drainsOnSigterm`) is retired by its deletion, so it may be removed busy: the
least busy first. Busy processes of pods that are going are no demand: what
they run finishes there and needs no capacity elsewhere.

The Event that names removed pods is not part of the plan's Events: a removal
can still be called off (the worker turned busy before its deletion), so it is
posted for the pods actually deleted (`removal_event`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..contracts.resource import WorkerPoolSpec
from .events import Event, EventReason
from .observation import Observation, PodView
from .reasons import DeletionReason, Reason

SURGE = 1  # extra pods while outdated pods are replaced
# A running pod that has not registered after this many heartbeat intervals is broken.
REGISTRATION_GRACE_INTERVALS = 6


@dataclass(frozen=True)
class ScaleMemory:
    """The recommendations inside the scale-down window that can still be its highest:
    ((time, desired), ...), times rising and values strictly falling (a monotonic queue of
    maxima). A recommendation no higher than a later one can never be the window's highest
    again, so it is dropped: the memory holds at most one entry per distinct value (at most
    maxWorkers - minWorkers + 1), whatever the window's length and however often the queue
    moves (a 24 h window kept every reading: 345,600 of them, 0.56 s a round)."""

    recommendations: tuple[tuple[float, int], ...] = ()

    def record(self, now: float, value: int, window: float) -> ScaleMemory:
        """With `value` recommended now, and what left the window dropped."""
        kept = [(t, n) for t, n in self.recommendations if now - t < window and n > value]
        return ScaleMemory((*kept, (now, value)))

    @property
    def highest(self) -> tuple[float, int]:
        return self.recommendations[0]


@dataclass(frozen=True)
class Deletion:
    name: str
    uid: str
    reason: DeletionReason


@dataclass
class ScalePlan:
    desired: int
    demand: int | None
    create: int = 0
    delete: list[Deletion] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    memory: ScaleMemory = field(default_factory=ScaleMemory)
    reconciling_reason: Reason | None = None
    reconciling_message: str = ""
    # The pods the plan removes, by name: what each was (for the Event posted once it is gone).
    removing: dict[str, str] = field(default_factory=dict)
    removal_numbers: str = ""  # the arithmetic behind the removals, for that Event
    active: int = 0  # the active pods the plan was made for
    # Seconds until the scale-down window lets `desired` drop (None: nothing pending).
    recheck_after: float | None = None


def clamp(value: int, spec: WorkerPoolSpec) -> int:
    return max(spec.min_workers, min(spec.max_workers, value))


def recommend(spec: WorkerPoolSpec, busy: int, depth: int) -> int:
    """Workers needed for the demand, within [min, max]."""
    return clamp(math.ceil((busy + depth) / spec.processes.max), spec)


# What each removal rank means, for the Event that names the removed pods.
_RANK_WORDS = {0: "not running", 1: "running, never registered", 2: "idle", 3: "busy, drains on SIGTERM"}


def _deletable_rank(pod: PodView, obs: Observation, spec: WorkerPoolSpec) -> int | None:
    """Lower is deleted first; None = must not be deleted now."""
    worker = obs.workers.get(pod.name)
    if worker is None:
        if pod.phase != "Running" or not pod.ready:
            return 0  # never became a worker
        grace = REGISTRATION_GRACE_INTERVALS * spec.heartbeat_interval_seconds
        if obs.now - pod.created > grace:
            return 1  # running but never registered: broken
        return None  # may be starting and about to register
    if worker.fresh and worker.info.runs_nothing:
        return 2  # idle by a fresh heartbeat
    if worker.fresh and spec.drains_on_sigterm:
        return 3  # busy: its SIGTERM stops its deliveries and it finishes what it holds
    return None  # busy, or not known to be idle


@dataclass(frozen=True)
class _Round:
    """What the steps of one scaling decision share."""

    spec: WorkerPoolSpec
    obs: Observation
    active: list[PodView]
    outdated: list[PodView]
    current_hash: str
    numbers: str  # the arithmetic, for Events


def decide_scale(spec: WorkerPoolSpec, obs: Observation, memory: ScaleMemory, current_hash: str) -> ScalePlan:
    active = [p for p in obs.pods if p.active]
    names = {p.name for p in active}
    busy = sum(w.info.busy_count for wid, w in obs.workers.items() if wid in names)
    plan = _desired(spec, obs, memory, len(active), busy)
    numbers = _numbers(spec, obs, busy, plan.demand)
    _replace_failed(plan, obs)
    outdated = [p for p in active if p.template_hash != current_hash]
    r = _Round(spec, obs, active, outdated, current_hash, numbers)
    _add_workers(plan, r)
    _remove_excess(plan, r)
    if plan.reconciling_reason is None:
        _say_what_is_changing(plan, obs, len(active), outdated)
    return plan


def _desired(spec: WorkerPoolSpec, obs: Observation, memory: ScaleMemory, count: int, busy: int) -> ScalePlan:
    """Desired workers: the highest recommendation within the window; without Redis, what runs."""
    window = spec.scaling.scale_down_delay_seconds
    if obs.queue is None:
        # Redis unknown: keep what runs (never scale down on unknown), at least min.
        return ScalePlan(desired=clamp(count, spec), demand=None, memory=memory)
    raw = recommend(spec, busy, obs.queue.depth)
    new_memory = memory.record(obs.now, raw, window)
    since, highest = new_memory.highest
    plan = ScalePlan(desired=clamp(highest, spec), demand=busy + obs.queue.depth, memory=new_memory)
    if clamp(highest, spec) > raw:  # desired drops when the highest leaves the window
        plan.recheck_after = max(0.0, since + window - obs.now)
    return plan


def _numbers(spec: WorkerPoolSpec, obs: Observation, busy: int, demand: int | None) -> str:
    """The arithmetic behind a decision, for its Event."""
    if obs.queue is None:
        why = obs.demand_error or obs.redis_error or "the queue is unavailable"
        return f"demand unknown ({why}): keeping current workers, at least min"
    return (
        f"demand {busy} busy + {obs.queue.depth} queued = {demand} processes, "
        f"{spec.processes.max} per worker (min {spec.min_workers}, max {spec.max_workers})"
    )


def _replace_failed(plan: ScalePlan, obs: Observation) -> None:
    for pod in obs.pods:
        if not pod.terminating and not pod.active:
            plan.delete.append(Deletion(pod.name, pod.uid, DeletionReason.REPLACE_FAILED))
            plan.events.append(
                Event("Warning", EventReason.REPLACING_FAILED_POD, f"Pod {pod.name} is {pod.phase}: replacing it")
            )


def _add_workers(plan: ScalePlan, r: _Round) -> None:
    """Up at once to desired; or one surge pod while outdated pods wait to become idle."""
    count = len(r.active)
    if plan.desired > count:
        plan.create = plan.desired - count
        if count == 0 and r.obs.queue is None:
            # A new pool (or one whose pods are all gone) before its first queue
            # reading: minWorkers, not a demand-driven scale-up.
            message = f"Creating {plan.desired} workers (minWorkers {r.spec.min_workers}); demand not read yet"
        else:
            message = f"Scaling up from {count} to {plan.desired} workers: {r.numbers}"
        plan.events.append(Event("Normal", EventReason.SCALING_UP, message))
    elif r.outdated:
        starting = [p for p in r.active if p.template_hash == r.current_hash and p.name not in r.obs.workers]
        if count < plan.desired + SURGE and not starting:
            plan.create = 1
            plan.events.append(
                Event(
                    "Normal",
                    EventReason.REPLACING_OUTDATED_PODS,
                    f"{len(r.outdated)} pods run an outdated template: adding 1 surge pod, then "
                    "removing outdated pods as they become idle",
                )
            )


def _remove_excess(plan: ScalePlan, r: _Round) -> None:
    """Down only by pods that may go (outdated first, then by removal rank), never below desired."""
    count = len(r.active)
    excess = count + plan.create - plan.desired
    if excess <= 0 or r.obs.queue is None:
        return
    ranked = sorted(
        ((rank, p) for p in r.active if (rank := _deletable_rank(p, r.obs, r.spec)) is not None),
        key=lambda rp: (rp[1].template_hash == r.current_hash, rp[0], _busy(rp[1], r.obs), -rp[1].created, rp[1].name),
    )
    current_active = count - len(r.outdated) + plan.create
    for rank, pod in ranked:
        if excess <= 0:
            break
        is_outdated = pod.template_hash != r.current_hash
        if not is_outdated and current_active <= plan.desired:
            continue  # only outdated pods make way for the surge
        reason = DeletionReason.REPLACE_OUTDATED if is_outdated else DeletionReason.SCALE_DOWN
        plan.delete.append(Deletion(pod.name, pod.uid, reason))
        plan.removing[pod.name] = _RANK_WORDS[rank]
        excess -= 1
        if not is_outdated:
            current_active -= 1
    if plan.removing:
        plan.removal_numbers, plan.active = r.numbers, count
    elif excess > 0 and not r.outdated:
        plan.reconciling_reason = Reason.WAITING_FOR_IDLE_WORKERS
        plan.reconciling_message = (
            f"{excess} workers above desired {plan.desired}, but none is idle by a fresh heartbeat"
        )


def _busy(pod: PodView, obs: Observation) -> int:
    worker = obs.workers.get(pod.name)
    return worker.info.busy_count if worker is not None else 0


def removal_event(plan: ScalePlan, deleted: list[str]) -> Event | None:
    """The Event for the removals that happened (`deleted`: the plan's pods actually deleted)."""
    gone = [name for name in deleted if name in plan.removing]
    if not gone:
        return None
    down = any(d.reason == DeletionReason.SCALE_DOWN for d in plan.delete if d.name in gone)
    described = ", ".join(f"{name} ({plan.removing[name]})" for name in gone)
    return Event(
        "Normal",
        EventReason.SCALING_DOWN if down else EventReason.REPLACING_OUTDATED_PODS,
        f"{'Scaling down' if down else 'Replacing'} from {plan.active} to {plan.active - len(gone)} workers "
        f"(desired {plan.desired}), removed {described}: {plan.removal_numbers}",
    )


def _say_what_is_changing(plan: ScalePlan, obs: Observation, count: int, outdated: list[PodView]) -> None:
    """The Reconciling condition's reason when the plan itself does not give one."""
    if plan.create:
        plan.reconciling_reason, plan.reconciling_message = Reason.SCALING_UP, f"adding {plan.create} workers"
    elif plan.delete:
        plan.reconciling_reason, plan.reconciling_message = Reason.SCALING_DOWN, f"removing {len(plan.delete)} pods"
    elif outdated:
        plan.reconciling_reason = Reason.REPLACING_OUTDATED_PODS
        plan.reconciling_message = f"{len(outdated)} pods run an outdated template"
    elif any(p.terminating for p in obs.pods):
        plan.reconciling_reason, plan.reconciling_message = Reason.PODS_CHANGING, "pods are starting or stopping"
    elif count != plan.desired:
        plan.reconciling_reason = Reason.WAITING_FOR_IDLE_WORKERS
        plan.reconciling_message = f"{count} workers, desired {plan.desired}"
