"""One WorkerPool's controller: observe -> decide -> apply, on every trigger.

Triggers are events, not a slow timer: a change of the WorkerPool, a pod
event, a heartbeat that changes a worker's state, the queue depth moving.
A short timer only covers time-based decisions (the scale-down window, the
slow refresh of volatile gauges).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import replace
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from ...contracts import names
from ...contracts.resource import LastRecycle, WorkerPool
from ...contracts.wire import describe_validation_error
from ...decide.backoff import parse_retry_after
from ...decide.deletion import finalizers_after
from ...decide.disruption import under_backlog
from ...decide.observation import Observation
from ...decide.plan import Context, Plan, PoolMemory, decide, status_of
from ...decide.pods import PoolRef
from ...decide.scaling import ScalePlan
from ...decide.status import WritePolicy, invalid_status, render
from ..ports import ApiError, PoolDeps, retry_after
from ..process import metrics
from ..process.clock import Clock
from ..process.tasks import supervise
from .api_io import EventEmitter, PoolRetry, StatusWriter, export_metrics
from .derived import ParsedPool, StoredConditions, TemplateHash
from .pod_actions import PodActions
from .recycling import Recycler
from .sources import SourceResolver, Sources, demand, redis_error
from .state import PoolState

log = logging.getLogger(__name__)

# Re-evaluate at least this often; the scale-down window and the slow status
# refresh schedule their own wake-ups, so this is only a safety net.
IDLE_TICK = 30.0
COALESCE = 0.02  # a burst of triggers becomes one reconcile
RECYCLE_RETRY = 1.0  # s: a recycle held back for a worker between subscriptions is tried again


class PoolController:
    def __init__(self, deps: PoolDeps, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.deps = deps
        self.clock = deps.clock
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.body = body
        self.state = PoolState(
            meta.get("uid", ""), self.poke, deps.clock, metrics.cold_start(self.namespace, self.name)
        )
        self.triggered_at: float | None = None  # the first trigger since the last round began
        self.memory = PoolMemory.from_status(body.get("status"))
        self.retry = PoolRetry(self.namespace, self.name)
        self.trigger = asyncio.Event()
        self.sources = SourceResolver(deps, self.namespace, self.name, self.state)
        self.next_scale_check_at: float | None = None
        self.events = EventEmitter(deps.kube, self.namespace, self.name, deps.clock, meta.get("uid", ""))
        self.recycler = Recycler(self.events.emit, (self.namespace, self.name))
        policy = WritePolicy(deps.status_min_interval, deps.status_volatile_refresh)
        self.status = StatusWriter(deps.kube, self.namespace, self.name, policy, deps.clock, wake=self.trigger.set)
        self.actions = PodActions(deps.kube, self.state, self.events, deps.worker_image)
        self.task: asyncio.Task[None] | None = None
        self.template_hash = TemplateHash(deps.worker_image)
        self.stored_conditions = StoredConditions()
        self.parsed = ParsedPool()

    # --- inputs (called from Kopf handlers and the Redis hub; never block) ------------------

    def start(self) -> None:
        self.task = supervise(f"pool-{self.namespace}-{self.name}", "pool", self._run)
        self.poke()

    async def pause(self) -> None:
        """Stop acting (leadership lost); the inputs keep flowing into the state."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        await self.status.stop()
        await self.actions.patches.stop()

    async def settled(self) -> None:
        """Return when the writes the rounds handed over (status, marks, gates) are done (tests)."""
        await self.status.settled()
        await self.actions.patches.settled()

    def resume(self) -> None:
        """Act again (leadership gained): forget what this replica wrote or decided while another led."""
        if self.task is not None:
            return
        self.memory = PoolMemory.from_status(self.body.get("status"))
        self.status.forget(self.body.get("status"))
        self.retry.succeeded()
        self.start()

    async def stop(self) -> None:
        await self.pause()
        self.sources.release()
        metrics.forget_pool(self.namespace, self.name)

    def poke(self) -> None:
        if self.triggered_at is None:
            self.triggered_at = self.clock.monotonic()
        self.trigger.set()

    def on_body(self, body: dict[str, Any]) -> None:
        old_meta, new_meta = self.body.get("metadata", {}), body.get("metadata", {})
        self.body = body
        self.state.uid = new_meta.get("uid", "")
        if old_meta.get("generation") != new_meta.get("generation"):
            self.state.spec_changed()
        if _acts_on(old_meta) != _acts_on(new_meta):
            self.poke()

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout = IDLE_TICK
            for due in (self.status.next_write_at, self.next_scale_check_at):
                if due is not None:
                    timeout = max(0.0, min(timeout, due - self.clock.monotonic()))
            try:
                await asyncio.wait_for(self.trigger.wait(), timeout=timeout)
                await asyncio.sleep(COALESCE)
            except TimeoutError:
                pass
            self.trigger.clear()
            retry_in = await self.run_round()
            if retry_in is not None:
                await asyncio.sleep(retry_in)
                self.poke()

    async def run_round(self) -> float | None:
        """One reconcile; after a failure, the seconds to wait before the next (backoff, Retry-After)."""
        started = time.perf_counter()
        try:
            await self.reconcile()
            self.retry.succeeded()
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _after_failure(self.retry, self.namespace, self.name, exc)
        finally:
            metrics.RECONCILE.labels(self.namespace, self.name).observe(time.perf_counter() - started)
            self.deps.progress()

    # --- one round: observe -> decide -> apply ------------------------------------------------

    async def reconcile(self) -> None:
        try:
            pool = self.parsed.of(self.body)
        except ValidationError as exc:
            await self._write_invalid(describe_validation_error(exc))
            return
        sources = await self.sources.resolve(pool)
        obs, ctx = await self._observe(pool, sources)
        plan = decide(pool, obs, ctx, self.memory, _utc(self.clock))
        await self._apply(pool, plan, sources)
        export_metrics(self.namespace, self.name, obs, plan.scale)

    async def _observe(self, pool: WorkerPool, sources: Sources) -> tuple[Observation, Context]:
        if not self.state.pods_synced:
            self.state.sync_pods(await self.deps.kube.list_pods(self.namespace, self.name))
        return self._snapshot(pool, sources)

    def _snapshot(self, pool: WorkerPool, sources: Sources) -> tuple[Observation, Context]:
        """What the pool looks like now, from the state the watches and the hubs keep (no I/O)."""
        queue, demand_error, demand_stall = demand(pool, sources)
        window = sources.protocol.fresh_window(pool.spec.heartbeat_interval_seconds)
        handshake = sources.protocol.has_retire_handshake
        obs = self.state.observe(window, queue, redis_error(sources), demand_error, leaving_is_gone=handshake)
        ctx = Context(
            template_hash=self.template_hash.of(pool),
            stall=sources.stall or demand_stall,
            create_error=self.state.create_error,
            status_known=self.state.resynced,
            previous_conditions=self.stored_conditions.of(self.body.get("status")),
            marks=under_backlog(self.deps.marks, self.deps.write_backlog()),
            removals_called_off=self.state.called_off.recent(),
            template_policy=self.deps.template_policy,
        )
        return obs, ctx

    def _current_status(self, pool: WorkerPool, sources: Sources, scale: ScalePlan) -> dict[str, Any] | None:
        """The status of the round's plan with what is observed now (for a write that waited for its
        turn, or a recycle record that is not the one decided): rendered, not decided again."""
        obs, ctx = self._snapshot(pool, sources)
        return status_of(pool, obs, ctx, scale, self.memory.last_recycle, _utc(self.clock))

    async def _apply(self, pool: WorkerPool, plan: Plan, sources: Sources) -> None:
        hub = sources.hub
        commands = hub.commands if hub is not None else None
        for event in plan.events:
            await self.events.emit(event)
        since, self.triggered_at = self.triggered_at, None
        await self.actions.apply(pool, PoolRef(pool.name, pool.namespace, pool.uid), plan.scale, commands, since)
        self.actions.mark(plan.marks)
        self.actions.open_gates(plan.registered, _utc(self.clock).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if plan.finalizer is not None:
            version, wanted = str(self.body["metadata"].get("resourceVersion")), finalizers_after(pool, plan.finalizer)
            if (patched := await self.deps.kube.set_finalizers(self.namespace, self.name, version, wanted)) is not None:
                self.on_body(patched)  # as its watch event will say: the next round does not patch again
        memory, before = plan.memory, self.memory
        if plan.recycle is not None and commands is not None:
            record = await self.recycler.apply(plan.recycle, plan.recycle_events, commands, sources.protocol)
            memory = _recycle_kept(memory, before, record, plan.recycle.record)
        self.memory = memory
        rendered = plan.status
        if rendered is not None and memory.last_recycle != plan.memory.last_recycle:
            # A previous run handled this request first (this round's status shows that run's
            # record), or it waits (the last record stays): never, even briefly, the one this
            # round decided and did not publish.
            rendered = self._current_status(pool, sources, plan.scale) or rendered
        if rendered is not None:
            # A recycle published this round is recorded in this round's write, ahead of the queue.
            published = memory.last_recycle is not None and memory.last_recycle != before.last_recycle
            current = lambda: self._current_status(pool, sources, plan.scale)  # noqa: E731
            await self.status.write(rendered, current, urgent=published)
        now = self.clock.monotonic()
        recheck = now + plan.recheck_after + 0.05 if plan.recheck_after is not None else None
        retry = now + RECYCLE_RETRY if self.recycler.waiting is not None else None
        dues = [d for d in (recheck, retry, self.actions.confirmation_due(pool)) if d is not None]
        self.next_scale_check_at = min(dues) if dues else None

    async def _write_invalid(self, message: str) -> None:
        generation = int(self.body["metadata"].get("generation") or 0)
        before = self.stored_conditions.of(self.body.get("status"))
        await self.status.write(
            render(invalid_status(generation, message, before, _utc(self.clock).replace(microsecond=0)))
        )


def _after_failure(retry: PoolRetry, namespace: str, name: str, exc: Exception) -> float:
    """Count and log a failed round: the seconds before the next (backoff, or the API's Retry-After)."""
    if isinstance(exc, ApiError):
        metrics.ERRORS.labels(namespace, name, f"api{exc.status}").inc()
        delay = retry.failed(parse_retry_after(retry_after(exc)))
        log.warning("%s/%s: API error %s %s; retrying in %.1f s", namespace, name, exc.status, exc.reason, delay)
    elif isinstance(exc, (RedisError, OSError)):
        # Redis went away mid-round (a failover, a restart): expected, and the hub's own fault
        # says so on the pool; the round is simply retried, no traceback.
        metrics.ERRORS.labels(namespace, name, "redis").inc()
        delay = retry.failed(None)
        log.warning("%s/%s: Redis error during the round (%s); retrying in %.1f s",
                    namespace, name, type(exc).__name__, delay)  # fmt: skip
    else:
        metrics.ERRORS.labels(namespace, name, "unexpected").inc()
        delay = retry.failed(None)
        log.error("%s/%s: reconcile failed; retrying in %.1f s", namespace, name, delay, exc_info=exc)
    return delay


def _recycle_kept(
    memory: PoolMemory, before: PoolMemory, record: LastRecycle | None, decided: LastRecycle
) -> PoolMemory:
    """What the round remembers of its recycle: nothing yet when it was held back (None); a
    previous run's record when that run handled it first."""
    if record is None:
        return replace(memory, handled_recycle=before.handled_recycle, last_recycle=before.last_recycle)
    return memory if record == decided else replace(memory, last_recycle=record)


def _utc(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.time(), dt.UTC)


def _acts_on(meta: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of a pool's metadata whose change needs a reconcile (a status write does not)."""
    recycle = (meta.get("annotations") or {}).get(names.RECYCLE_ANNOTATION)
    return meta.get("generation"), recycle, meta.get("deletionTimestamp"), tuple(meta.get("finalizers") or ())
