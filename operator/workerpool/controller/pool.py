"""One WorkerPool's controller: gather -> decide -> act, on every trigger.

Triggers are events, not a slow timer: a change of the WorkerPool, a pod
event, a heartbeat that changes a worker's state, the queue depth moving.
A short timer only covers time-based decisions (the scale-down window, the
slow refresh of volatile gauges).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..contracts import names
from ..contracts.resource import Condition, WorkerPool
from ..contracts.wire import (
    QueueStatus,
    Registration,
    WorkerHeartbeat,
    describe_validation_error,
)
from ..decide.backoff import Backoff, parse_retry_after
from ..decide.observation import Observation, PodView, WorkerView, fresh_window
from ..decide.pods import PoolRef, has_password, render_pod, render_template, template_hash
from ..decide.reasons import DeletionReason, Reason
from ..decide.resync import Tracked, merge_resync, shape
from ..decide.scaling import Event, ScaleMemory, ScalePlan, decide_scale
from ..decide.status import (
    Stall,
    WritePolicy,
    build_status,
    invalid_status,
    render,
)
from . import metrics
from .kube import ApiException
from .pool_io import EventEmitter, RedisUrlSource, StatusWriter, export_metrics
from .recycle_handler import RecycleHandler
from .redis_hub import Subscriber

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger(__name__)

# Re-evaluate at least this often; the scale-down window and the slow status
# refresh schedule their own wake-ups, so this is only a safety net.
IDLE_TICK = 30.0
COALESCE = 0.02  # a burst of triggers becomes one reconcile
DELETING_TIMEOUT = 120.0
RETIRE_TTL = 120  # s; longer than a pod deletion takes, short enough to undo a lost one


def _parse_time(value: str | None) -> float:
    if not value:
        return time.time()
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _pod_view(body: dict[str, Any]) -> PodView:
    return PodView.from_body(body, _parse_time(body["metadata"].get("creationTimestamp")))


class PoolController:
    def __init__(self, manager: Manager, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.manager = manager
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.body = body
        # Only what decisions read of each pod (a whole pod body is ~100x larger: at
        # 1000 pods that difference is most of the operator's memory).
        self.pods: dict[str, PodView] = {}
        self.pods_synced = False
        # Pods this controller deleted (uid -> until when), terminating even if a
        # stale watch event still shows them running.
        self.deleting: dict[str, float] = {}
        self.workers: dict[str, Tracked] = {}
        self.memory = ScaleMemory()
        self.backoff = Backoff()
        self.trigger = asyncio.Event()
        self.hub_url: str | None = None
        self.create_error: str | None = None
        self.next_scale_check_at: float | None = None
        config = manager.config
        self.events = EventEmitter(manager.kube, self.namespace, self.name)
        self.events.uid = meta.get("uid", "")
        self.status = StatusWriter(
            manager.kube,
            self.namespace,
            self.name,
            WritePolicy(config.status_min_interval, config.status_volatile_refresh),
        )
        self.redis_url = RedisUrlSource(manager.kube, self.namespace)
        self.recycle = RecycleHandler(self.namespace, self.name, body.get("status") or {})
        self.password_warned_generation: int | None = None
        self.task: asyncio.Task[None] | None = None
        # Until the first resync from Redis, the worker map is empty for lack of
        # data, not because the pool has no workers: no status write before it
        # (an operator restart must not flap the status to zero workers).
        self.resynced = False
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
            self.manager.release_hub(self.hub_url, self.namespace, self.name)
        metrics.forget_pool(self.namespace, self.name)

    def poke(self) -> None:
        self.trigger.set()

    def on_body(self, body: dict[str, Any]) -> None:
        old_meta, new_meta = self.body.get("metadata", {}), body.get("metadata", {})
        changed = old_meta.get("generation") != new_meta.get("generation") or (old_meta.get("annotations") or {}).get(
            names.RECYCLE_ANNOTATION
        ) != (new_meta.get("annotations") or {}).get(names.RECYCLE_ANNOTATION)
        self.body = body
        if old_meta.get("generation") != new_meta.get("generation"):
            self.create_error = None
        if changed:
            self.poke()

    def on_pod(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if event_type == "DELETED":
            self.pods.pop(name, None)
            self.workers.pop(name, None)
        else:
            self.pods[name] = _pod_view(body)
        self.poke()

    def owns(self, worker_id: str) -> bool:
        """Is this worker one of this pool's pods (by name, and by the pool's uid in its owners)?"""
        view = self.pods.get(worker_id)
        return view is not None and self._is_ours(view)

    def _is_ours(self, view: PodView) -> bool:
        # A same-named pool's leftover, or a pod someone else labelled, is not.
        uid = self.body["metadata"].get("uid")
        return not uid or uid in view.owners

    def on_heartbeat(self, hb: WorkerHeartbeat) -> None:
        info = hb.worker_info()
        before = self.workers.get(hb.worker_id)
        if before is not None and before.reported_at is not None and hb.timestamp < before.reported_at:
            return  # an older heartbeat overtaken by a resync
        self.workers[hb.worker_id] = Tracked(info, time.monotonic(), hb.timestamp)
        if before is None or shape(before.info) != shape(info):
            self.poke()

    def on_queue(self, _: QueueStatus) -> None:
        self.poke()

    def on_resync(self, present: set[str], regs: dict[str, Registration]) -> None:
        """`present`: every registered worker of this pool; `regs`: the reports re-read from Redis."""
        self.workers, changed = merge_resync(self.workers, present, regs, time.monotonic(), time.time())
        changed = changed or not self.resynced
        self.resynced = True
        if changed:
            self.poke()

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout = IDLE_TICK
            for due in (self.status.next_write_at, self.next_scale_check_at):
                if due is not None:
                    timeout = max(0.0, min(timeout, due - time.monotonic()))
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
                self.manager.last_progress = time.monotonic()

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
                self.manager.release_hub(self.hub_url, self.namespace, self.name)
            self.hub_url = url
        hub = self.manager.hub_for(url)
        hub.subscribe(
            Subscriber(
                self.namespace,
                self.name,
                pool.spec.redis.queue_key,
                fresh_window(pool.spec.heartbeat_interval_seconds),
                self.on_heartbeat,
                self.on_queue,
                self.on_resync,
                self.poke,
                self.owns,
            )
        )

    async def _sync_pods(self) -> None:
        """The first reconcile lists the pods (the watch cache may not be complete yet)."""
        if not self.pods_synced:
            for body in await self.manager.kube.list_pods(self.namespace, self.name):
                self.pods.setdefault(body["metadata"]["name"], _pod_view(body))
            self.pods_synced = True

    def _observe(self, pool: WorkerPool, queue: QueueStatus | None, redis_error: str | None) -> Observation:
        now_mono = time.monotonic()
        self.deleting = {uid: t for uid, t in self.deleting.items() if t > now_mono}
        pods = []
        for view in self.pods.values():
            if not self._is_ours(view):
                continue
            if view.uid in self.deleting and not view.terminating:
                view = dataclasses.replace(view, terminating=True)
            pods.append(view)
        window = fresh_window(pool.spec.heartbeat_interval_seconds)
        workers = {
            wid: WorkerView(t.info, fresh=redis_error is None and now_mono - t.last_seen < window)
            for wid, t in self.workers.items()
            if wid in self.pods
        }
        return Observation(pods=tuple(pods), workers=workers, queue=queue, redis_error=redis_error, now=time.time())

    async def reconcile(self) -> None:
        try:
            pool = WorkerPool.from_body(self.body)
        except ValidationError as exc:
            await self._write_invalid(describe_validation_error(exc))
            return
        stall: Stall | None = None
        url, stall = await self.redis_url.get(pool.spec)
        queue: QueueStatus | None = None
        redis_error: str | None = None
        if url is not None:
            self._subscribe(url, pool)
            hub = self.manager.hub_for(url)
            redis_error = hub.error
            queue = hub.queue(pool.spec.redis.queue_key)
            if redis_error is None and queue is None:
                redis_error = "waiting for the first queue reading"
            if redis_error is not None and stall is None and hub.error is not None:
                stall = Stall(
                    Reason.REDIS_UNAVAILABLE,
                    f"Redis unavailable ({redis_error}): no scale-down, at least minWorkers kept",
                )
            if has_password(pool.spec.redis.url) and self.password_warned_generation != pool.generation:
                self.password_warned_generation = pool.generation
                await self.events.emit(
                    Event(
                        "Warning",
                        "PasswordInURL",
                        "spec.redis.url carries a password: put the URL in a Secret and use "
                        "spec.redis.urlSecretRef (the spec is readable by anyone who can get the pool)",
                    )
                )
        else:
            redis_error = stall.message if stall else "no Redis URL"
        await self._sync_pods()
        obs = self._observe(pool, queue, redis_error)
        ref = PoolRef(pool.name, pool.namespace, pool.uid)
        current_hash = self._template_hash(pool, ref)
        plan = decide_scale(pool.spec, obs, self.memory, current_hash)
        self.memory = plan.memory
        self.next_scale_check_at = (
            time.monotonic() + plan.recheck_after + 0.05 if plan.recheck_after is not None else None
        )
        await self._act(pool, ref, plan)
        if self.create_error is not None and stall is None:
            stall = Stall(Reason.PODS_REJECTED, self.create_error)
        if redis_error is None and url is not None:
            commands = self.manager.hub_for(url).commands
            await self.recycle.handle(pool, obs, commands, self.events.emit)
        if self.resynced or stall is not None:
            await self._write_status(pool, obs, plan, stall)
        export_metrics(self.namespace, self.name, obs, plan)

    def _template_hash(self, pool: WorkerPool, ref: PoolRef) -> str:
        """The current pod template's hash, rendered once per spec generation (not per reconcile)."""
        if self._hash_cache is None or self._hash_cache[0] != pool.generation:
            rendered = render_template(ref, pool.spec, self.manager.config.worker_image)
            self._hash_cache = (pool.generation, template_hash(rendered))
        return self._hash_cache[1]

    async def _act(self, pool: WorkerPool, ref: PoolRef, plan: ScalePlan) -> None:
        for event in plan.events:
            await self.events.emit(event)
        for _ in range(plan.create):
            body = render_pod(ref, pool.spec, self.manager.config.worker_image)
            try:
                created = await self.manager.kube.create_pod(self.namespace, body)
            except ApiException as exc:
                if exc.status in (400, 403, 422):  # admission (e.g. PodSecurity) or an invalid template
                    self.create_error = f"pod creation rejected ({exc.status}): {_api_message(exc)}"
                    await self.events.emit(Event("Warning", "PodCreateRejected", self.create_error))
                    return
                raise
            self.create_error = None
            # In the cache at once (the watch event may come before or after this):
            # the next reconcile counts it and never creates it twice.
            self.pods[created["metadata"]["name"]] = _pod_view(created)
            metrics.SCALE_EVENTS.labels(self.namespace, self.name, "create").inc()
        for deletion in plan.delete:
            retired = deletion.reason != DeletionReason.REPLACE_FAILED
            if retired and not await self._retire(pool, deletion.name):
                continue
            try:
                await self.manager.kube.delete_pod(self.namespace, deletion.name, deletion.uid)
            except ApiException as exc:
                if retired and self.hub_url is not None and 400 <= (exc.status or 0) < 500:
                    # Refused, so the pod stays: its worker may claim again at once, not when
                    # the mark expires. (A 5xx may have deleted it after all: the mark stays.)
                    await self.manager.hub_for(self.hub_url).commands.unretire(deletion.name)
                raise
            self.deleting[deletion.uid] = time.monotonic() + DELETING_TIMEOUT
            metrics.SCALE_EVENTS.labels(self.namespace, self.name, "delete").inc()

    async def _retire(self, pool: WorkerPool, worker_id: str) -> bool:
        """Atomically in Redis: stop the worker claiming, and confirm it holds nothing.

        The heartbeat that showed it idle may be up to a coalescing window old; this
        closes the race with a claim made since. A worker that is busy after all is
        kept (and claims again when the retiring mark expires).
        """
        if self.hub_url is None:
            return False
        hub = self.manager.hub_for(self.hub_url)
        if await hub.commands.retire(worker_id, pool.spec.redis.queue_key, RETIRE_TTL):
            return True
        log.info("%s/%s: %s turned busy before its pod was deleted: kept", self.namespace, self.name, worker_id)
        return False

    def _previous_conditions(self) -> list[Condition]:
        out = []
        for raw in (self.body.get("status") or {}).get("conditions") or []:
            try:
                out.append(Condition.model_validate(raw))
            except ValidationError:
                continue
        return out

    async def _write_status(self, pool: WorkerPool, obs: Observation, plan: ScalePlan, stall: Stall | None) -> None:
        status = build_status(
            generation=pool.generation,
            obs=obs,
            plan=plan,
            stall=stall,
            last_recycle=self.recycle.last_recycle,
            previous_conditions=self._previous_conditions(),
            now=dt.datetime.now(dt.UTC).replace(microsecond=0),
        )
        await self.status.write(render(status))

    async def _write_invalid(self, message: str) -> None:
        generation = int(self.body["metadata"].get("generation") or 0)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        await self.status.write(render(invalid_status(generation, message, self._previous_conditions(), now)))


def _header(exc: ApiException, name: str) -> str | None:
    """A response header of a failed API call (None when the call never got a response)."""
    headers = getattr(exc, "headers", None)
    value = headers.get(name) if headers is not None else None
    return str(value) if value is not None else None


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or b"{}").get("message", exc.reason))[:500]
    except (TypeError, ValueError):
        return str(exc.reason)
