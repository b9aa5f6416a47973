"""One pool's whole decision for one round: observe -> **decide** -> apply.

`decide()` reads plain values (the pool, what was observed, what earlier rounds
remembered) and returns a Plan: the Events to post, the pods to create and
delete, the node-autoscaler marks to set or remove, the recycle request to
publish or reject, the status to write, and when to look again. It does no
I/O; the controller applies the Plan, and what applying returns (a refused
create, a recycle a previous run already handled) becomes part of the next
round's observation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from ..contracts import names
from ..contracts.resource import Condition, LastRecycle, WorkerPool
from ..protocols import protocol_for
from .deletion import FinalizerChange, decide_deletion, deletion_event, retiring_spec
from .disruption import MarkChange, MarkMemory, MarkPolicy, decide_marks, managed_keys
from .events import Event, EventReason
from .observation import Observation, WorkerView
from .pods import has_password
from .reasons import Reason
from .recycle import RecycleDecision, decide_recycle, recycle_events
from .scaling import ScaleMemory, ScalePlan, decide_scale
from .status import Stall, build_status, render
from .template_policy import TemplatePolicy, template_refusal


def password_in_url(field: str) -> Event:
    return Event(
        "Warning",
        EventReason.PASSWORD_IN_URL,
        f"spec.{field}.url carries a password: put the URL in a Secret and use "
        f"spec.{field}.urlSecretRef (the spec is readable by anyone who can get the pool)",
    )


PASSWORD_IN_URL = password_in_url("redis")


@dataclass(frozen=True)
class PoolMemory:
    """What one round leaves for the next."""

    scale: ScaleMemory = field(default_factory=ScaleMemory)
    handled_recycle: str | None = None  # the last annotation value handled
    last_recycle: LastRecycle | None = None
    password_warned_generation: int | None = None
    marks: MarkMemory = field(default_factory=MarkMemory)
    deletion_announced: bool = False  # the RetiringWorkers Event of a deleted pool was posted

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> PoolMemory:
        """After a restart: the recycle the status records is handled (it must not be published again)."""
        raw = (status or {}).get("lastRecycle")
        if raw:
            with contextlib.suppress(ValidationError):
                last = LastRecycle.model_validate(raw)
                return cls(handled_recycle=last.request, last_recycle=last)
        return cls()


@dataclass(frozen=True)
class Context:
    """What the controller observed this round besides the pods, workers and queue."""

    template_hash: str
    stall: Stall | None = None  # the Redis URL, its Secret or the hub is failing
    create_error: str | None = None  # the API server refused the last pod create
    status_known: bool = True  # False until the first resync from Redis: no status before it
    previous_conditions: Sequence[Condition] = ()
    marks: MarkPolicy = field(default_factory=MarkPolicy)  # the node-autoscaler marks on busy workers
    removals_called_off: int = 0  # removals called off in a row lately: the chosen worker turned busy first
    template_policy: TemplatePolicy = field(default_factory=TemplatePolicy)  # set at install


@dataclass(frozen=True)
class Plan:
    events: tuple[Event, ...]  # posted first, in order
    scale: ScalePlan  # the pods to create and delete
    recycle: RecycleDecision | None  # the recycle request to publish or reject
    recycle_events: tuple[Event, ...]  # posted when the request is first handled
    marks: tuple[MarkChange, ...]  # node-autoscaler annotations to set or remove on pods
    registered: tuple[str, ...]  # pods whose readiness gate opens: their worker has registered
    finalizer: FinalizerChange | None  # add or remove the pool's retire-workers finalizer
    status: dict[str, Any] | None  # rendered; written through the write policy
    memory: PoolMemory  # for the next round, once this plan is applied
    recheck_after: float | None  # seconds until a time-based decision is due


# Stalls the pool's author must fix (a Warning Event, at most once a minute, besides the condition).
WARNED_STALLS = (Reason.REDIS_URL_INVALID, Reason.REDIS_URL_REFUSED, Reason.POD_NAMES_SHARED, Reason.TEMPLATE_REFUSED)


def decide(pool: WorkerPool, obs: Observation, ctx: Context, memory: PoolMemory, now: dt.datetime) -> Plan:
    events: list[Event] = []
    if memory.password_warned_generation != pool.generation:
        rabbitmq = pool.spec.rabbitmq
        warnings = [PASSWORD_IN_URL] if has_password(pool.spec.redis.url) else []
        if rabbitmq is not None and has_password(rabbitmq.url):
            warnings.append(password_in_url("rabbitmq"))
        if warnings:
            events.extend(warnings)
            memory = replace(memory, password_warned_generation=pool.generation)
    refused = template_refusal(pool.spec.template, ctx.template_policy)
    for stall in (ctx.stall, refused):
        if stall is not None and stall.reason in WARNED_STALLS:
            events.append(Event("Warning", stall.reason, stall.message))  # posted at most once a minute
    deleting = pool.deleting_since is not None
    spec = retiring_spec(pool.spec) if deleting else pool.spec  # a deleted pool wants no worker
    scale = decide_scale(spec, obs, memory.scale, ctx.template_hash)
    if refused is not None:  # whatever else stalls the pool (a Redis outage keeps minWorkers)
        scale = _held(scale)
    _explain_pinned(pool, obs, scale, ctx.removals_called_off)
    deletion = decide_deletion(pool, obs, now)
    if deleting:
        memory = _say_retiring(pool, obs, scale, events, memory)
    events.extend(deletion.events)
    events.extend(scale.events)
    memory = replace(memory, scale=scale.memory)
    recycle = _recycle(pool, obs, memory, now) if ctx.status_known else None
    if recycle is not None:
        memory = replace(memory, handled_recycle=recycle.value, last_recycle=recycle.record)
    template_annotations = (pool.spec.template.get("metadata") or {}).get("annotations") or {}
    marks = decide_marks(obs.pods, obs.workers, obs.now, memory.marks, ctx.marks, managed_keys(template_annotations))
    memory = replace(memory, marks=marks.memory)
    status = status_of(pool, obs, ctx, scale, memory.last_recycle, now)
    return Plan(
        events=tuple(events),
        scale=scale,
        recycle=recycle,
        recycle_events=tuple(recycle_events(recycle)) if recycle is not None else (),
        marks=marks.changes,
        registered=registered_pods(obs),
        finalizer=deletion.finalizer,
        status=status,
        memory=memory,
        recheck_after=_earliest(scale.recheck_after, obs.stale_in, marks.recheck_after, deletion.recheck_after),
    )


def _say_retiring(
    pool: WorkerPool, obs: Observation, scale: ScalePlan, events: list[Event], memory: PoolMemory
) -> PoolMemory:
    """A deleted pool: Reconciling says its workers are being retired (and an Event, once)."""
    active = sum(1 for p in obs.pods if p.active)
    scale.reconciling_reason = Reason.DELETING
    scale.reconciling_message = f"the pool is being deleted: {active} workers left to retire"
    if memory.deletion_announced:
        return memory
    events.append(deletion_event(pool, active))
    return replace(memory, deletion_announced=True)


# Removals called off this many times in a row make the status say why the pool cannot shrink.
CALLED_OFF_SHOWN = 3


def _explain_pinned(pool: WorkerPool, obs: Observation, scale: ScalePlan, called_off: int) -> None:
    """More workers than desired and none goes: under steady traffic work is handed to every worker
    in turn (RabbitMQ, a shared Redis queue), so none stays idle long enough, or each one chosen
    turns busy before it goes. Say so, and what would fix it."""
    active = sum(1 for p in obs.pods if p.active)
    if active <= scale.desired or scale.create:
        return
    drains = protocol_for(pool.spec.protocol).drains_on_sigterm(pool.spec)
    fix = (
        "it shrinks when traffic slows"
        if drains
        else "a worker that drains on SIGTERM (Bifrost's newer worker, spec.drainsOnSigterm: true) can be removed"
        " while busy"
    )
    if called_off >= CALLED_OFF_SHOWN:
        scale.reconciling_reason = Reason.REMOVALS_CALLED_OFF
        scale.reconciling_message = (
            f"{active} workers, desired {scale.desired}: the last {called_off} removals were called off because"
            f" the chosen worker took new work first (work is handed to every worker in turn, so under steady"
            f" traffic none stays idle between two heartbeats; {fix})"
        )
    elif scale.reconciling_reason == Reason.WAITING_FOR_IDLE_WORKERS and not drains:
        scale.reconciling_message += f" (under steady traffic none may ever be; {fix})"


def status_of(
    pool: WorkerPool,
    obs: Observation,
    ctx: Context,
    scale: ScalePlan,
    last_recycle: LastRecycle | None,
    now: dt.datetime,
) -> dict[str, Any] | None:
    """The rendered status for a round's scale plan and what is observed (None: nothing to show
    yet). Also how a write that waited for its turn is brought up to date, without deciding again."""
    stall = _stall(pool, ctx)
    if stall is None and ctx.create_error is not None:
        stall = Stall(Reason.PODS_REJECTED, ctx.create_error)
    if not ctx.status_known and stall is None:
        return None
    status = build_status(
        generation=pool.generation,
        obs=obs,
        plan=scale,
        stall=stall,
        last_recycle=last_recycle,
        previous_conditions=ctx.previous_conditions,
        now=now.replace(microsecond=0),
        process_bounds=(0, pool.spec.processes.max),
    )
    return render(status)


def _stall(pool: WorkerPool, ctx: Context) -> Stall | None:
    """Why the pool is stalled besides a refused create: its sources, then the template policy."""
    return ctx.stall or template_refusal(pool.spec.template, ctx.template_policy)


def _held(scale: ScalePlan) -> ScalePlan:
    """No pod changes: nothing is created from a refused template, and nothing that runs is removed
    for a replacement that cannot come (the scale-down window's memory is kept)."""
    return replace(scale, create=0, delete=[], events=[], removing={}, removal_numbers="",
                   reconciling_reason=None, reconciling_message="")  # fmt: skip


def _earliest(*delays: float | None) -> float | None:
    known = [d for d in delays if d is not None]
    return min(known) if known else None


def _recycle(pool: WorkerPool, obs: Observation, memory: PoolMemory, now: dt.datetime) -> RecycleDecision | None:
    """A new annotation value is handled once Redis is readable and the workers were read from it
    (the caller waits for the first resync): its targets are resolved against the live workers."""
    value = pool.annotations.get(names.RECYCLE_ANNOTATION)
    if value is None or value == memory.handled_recycle or obs.redis_error is not None:
        return None
    kills = protocol_for(pool.spec.protocol).recycle_kills_running
    return decide_recycle(value, pool.uid, live_workers(obs), now, kills)


def registered_pods(obs: Observation) -> tuple[str, ...]:
    """Active pods whose readiness gate is still closed and whose worker has registered (a fresh
    heartbeat): the gate opens once and stays open (a Redis outage must not make every pod unready,
    which PodDisruptionBudgets would count as disrupted)."""
    return tuple(
        p.name for p in obs.pods if p.gate_open and p.active and (w := obs.workers.get(p.name)) is not None and w.fresh
    )


def live_workers(obs: Observation) -> dict[str, WorkerView]:
    """Registered workers whose pod is active: the only valid recycle targets."""
    active = {p.name for p in obs.pods if p.active}
    return {wid: w for wid, w in obs.workers.items() if wid in active}
