"""One WorkerPool's controller: gather -> decide -> act, on every trigger.

Triggers are events, not a slow timer: a change of the WorkerPool, a pod
event, a heartbeat that changes a worker's state, the queue depth moving.
A short timer only covers time-based decisions (the scale-down window, the
slow refresh of volatile gauges).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from typing import Any

from pydantic import ValidationError

from ..contracts import names
from ..contracts.resource import WorkerPool
from ..contracts.wire import (
    QueueStatus,
    describe_validation_error,
)
from ..decide.backoff import Backoff, parse_retry_after
from ..decide.observation import Observation, fresh_window
from ..decide.pods import PoolRef, render_template, template_hash
from ..decide.reasons import Reason
from ..decide.scaling import ScaleMemory, ScalePlan, decide_scale
from ..decide.status import (
    Stall,
    WritePolicy,
    build_status,
    invalid_status,
    previous_conditions,
    render,
)
from . import metrics
from .kube import ApiException
from .pod_actions import PodActions
from .pool_io import EventEmitter, RedisUrlSource, StatusWriter, export_metrics
from .pool_state import PoolState
from .ports import PoolDeps
from .recycle_handler import RecycleHandler
from .redis_hub import Subscriber

log = logging.getLogger(__name__)

# Re-evaluate at least this often; the scale-down window and the slow status
# refresh schedule their own wake-ups, so this is only a safety net.
IDLE_TICK = 30.0
COALESCE = 0.02  # a burst of triggers becomes one reconcile


class PoolController:
    def __init__(self, deps: PoolDeps, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.deps = deps
        self.clock = deps.clock
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.body = body
        self.state = PoolState(meta.get("uid", ""), self.poke, deps.clock)
        self.memory = ScaleMemory()
        self.backoff = Backoff()
        self.trigger = asyncio.Event()
        self.hub_url: str | None = None
        self.next_scale_check_at: float | None = None
        self.events = EventEmitter(deps.kube, self.namespace, self.name, deps.clock)
        self.events.uid = meta.get("uid", "")
        policy = WritePolicy(deps.status_min_interval, deps.status_volatile_refresh)
        self.status = StatusWriter(deps.kube, self.namespace, self.name, policy, deps.clock)
        self.redis_url = RedisUrlSource(deps.kube, self.namespace, deps.clock)
        self.actions = PodActions(deps.kube, self.state, self.events, deps.worker_image)
        self.recycle = RecycleHandler(self.namespace, self.name, body.get("status") or {})
        self.task: asyncio.Task[None] | None = None
        self._hash_cache: tuple[int, str] | None = None

    # --- inputs (called from Kopf handlers and the Redis hub; never block) ------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"pool-{self.namespace}-{self.name}")
        self.poke()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.hub_url is not None:
            self.deps.hubs.release_hub(self.hub_url, self.namespace, self.name)
        metrics.forget_pool(self.namespace, self.name)

    def poke(self) -> None:
        self.trigger.set()

    def on_body(self, body: dict[str, Any]) -> None:
        old_meta, new_meta = self.body.get("metadata", {}), body.get("metadata", {})
        self.body = body
        self.state.uid = new_meta.get("uid", "")
        if old_meta.get("generation") != new_meta.get("generation"):
            self.actions.create_error = None  # a new spec may well be accepted
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
            started = time.perf_counter()
            try:
                await self.reconcile()
                self._succeeded()
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                metrics.ERRORS.labels(self.namespace, self.name, f"api{exc.status}").inc()
                delay = self._failed(parse_retry_after(_header(exc, "Retry-After")))
                log.warning(
                    "%s/%s: API error %s %s; retrying in %.1f s",
                    self.namespace,
                    self.name,
                    exc.status,
                    exc.reason,
                    delay,
                )
                await asyncio.sleep(delay)
                self.poke()
            except Exception:
                metrics.ERRORS.labels(self.namespace, self.name, "unexpected").inc()
                delay = self._failed(None)
                log.exception("%s/%s: reconcile failed; retrying in %.1f s", self.namespace, self.name, delay)
                await asyncio.sleep(delay)
                self.poke()
            finally:
                metrics.RECONCILE.labels(self.namespace, self.name).observe(time.perf_counter() - started)
                self.deps.progress()

    def _failed(self, retry_after: float | None) -> float:
        """Per pool: under sustained errors (429s from a busy API server) pools spread out and slow down."""
        delay = self.backoff.next_delay(random.random(), retry_after)
        metrics.RETRY_DELAY.labels(self.namespace, self.name).set(delay)
        return delay

    def _succeeded(self) -> None:
        if self.backoff.failures:
            self.backoff.reset()
            metrics.RETRY_DELAY.labels(self.namespace, self.name).set(0)

    # --- reconcile: gather -> decide -> act --------------------------------------------------------

    def _subscribe(self, url: str, pool: WorkerPool) -> None:
        if self.hub_url != url:
            if self.hub_url is not None:
                self.deps.hubs.release_hub(self.hub_url, self.namespace, self.name)
            self.hub_url = url
        hub = self.deps.hubs.hub_for(url)
        hub.subscribe(
            Subscriber(
                self.namespace,
                self.name,
                pool.spec.redis.queue_key,
                fresh_window(pool.spec.heartbeat_interval_seconds),
                self.state.on_heartbeat,
                lambda _queue: self.poke(),
                self.state.on_resync,
                self.poke,
                self.state.owns,
            )
        )

    async def reconcile(self) -> None:
        try:
            pool = WorkerPool.from_body(self.body)
        except ValidationError as exc:
            await self._write_invalid(describe_validation_error(exc))
            return
        url, queue, redis_error, stall = await self._redis(pool)
        if not self.state.pods_synced:
            self.state.sync_pods(await self.deps.kube.list_pods(self.namespace, self.name))
        obs = self.state.observe(pool.spec.heartbeat_interval_seconds, queue, redis_error)
        ref = PoolRef(pool.name, pool.namespace, pool.uid)
        current_hash = self._template_hash(pool, ref)
        plan = decide_scale(pool.spec, obs, self.memory, current_hash)
        self.memory = plan.memory
        self.next_scale_check_at = (
            self.clock.monotonic() + plan.recheck_after + 0.05 if plan.recheck_after is not None else None
        )
        commands = self.deps.hubs.hub_for(url).commands if url is not None else None
        await self.actions.apply(pool, ref, plan, commands)
        if self.actions.create_error is not None and stall is None:
            stall = Stall(Reason.PODS_REJECTED, self.actions.create_error)
        if redis_error is None and commands is not None:
            await self.recycle.handle(pool, obs, commands, self.events.emit, self._now())
        if self.state.resynced or stall is not None:
            await self._write_status(pool, obs, plan, stall)
        export_metrics(self.namespace, self.name, obs, plan)

    async def _redis(self, pool: WorkerPool) -> tuple[str | None, QueueStatus | None, str | None, Stall | None]:
        """The pool's Redis: its URL, the last queue reading, why demand is unknown, and a stall."""
        url, stall = await self.redis_url.get(pool.spec)
        if url is None:
            return None, None, stall.message if stall else "no Redis URL", stall
        self._subscribe(url, pool)
        hub = self.deps.hubs.hub_for(url)
        queue = hub.queue(pool.spec.redis.queue_key)
        redis_error = hub.error
        if hub.error is not None and stall is None:
            stall = Stall(
                Reason.REDIS_UNAVAILABLE, f"Redis unavailable ({hub.error}): no scale-down, at least minWorkers kept"
            )
        elif redis_error is None and queue is None:
            redis_error = "waiting for the first queue reading"
        await self.events.warn_password_in_url(pool)
        return url, queue, redis_error, stall

    def _template_hash(self, pool: WorkerPool, ref: PoolRef) -> str:
        """The current pod template's hash, rendered once per spec generation (not per reconcile)."""
        if self._hash_cache is None or self._hash_cache[0] != pool.generation:
            rendered = render_template(ref, pool.spec, self.deps.worker_image)
            self._hash_cache = (pool.generation, template_hash(rendered))
        return self._hash_cache[1]

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)

    async def _write_status(self, pool: WorkerPool, obs: Observation, plan: ScalePlan, stall: Stall | None) -> None:
        status = build_status(
            generation=pool.generation,
            obs=obs,
            plan=plan,
            stall=stall,
            last_recycle=self.recycle.last_recycle,
            previous_conditions=previous_conditions(self.body.get("status")),
            now=self._now().replace(microsecond=0),
        )
        await self.status.write(render(status))

    async def _write_invalid(self, message: str) -> None:
        generation = int(self.body["metadata"].get("generation") or 0)
        before = previous_conditions(self.body.get("status"))
        await self.status.write(render(invalid_status(generation, message, before, self._now().replace(microsecond=0))))


def _acts_on(meta: dict[str, Any]) -> tuple[Any, Any]:
    """The parts of a pool's metadata whose change needs a reconcile (a status write does not)."""
    return meta.get("generation"), (meta.get("annotations") or {}).get(names.RECYCLE_ANNOTATION)


def _header(exc: ApiException, name: str) -> str | None:
    """A response header of a failed API call (None when the call never got a response)."""
    headers = getattr(exc, "headers", None)
    value = headers.get(name) if headers is not None else None
    return str(value) if value is not None else None
