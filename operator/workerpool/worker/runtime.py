"""`workerpool worker`: one worker (one pod) = one process pool fed from the queue.

Tasks on one asyncio loop:
- dispatch:    claim (Lua, with a lease) whenever a process is idle or the pool
               may grow; block on the queue's wake-up list when it is empty;
- results:     write results (Lua: result + publish + lease release); kept in
               memory and retried while Redis is unreachable;
- heartbeat:   registration hash + TTL + publish, every interval AND shortly
               after any state change (coalesced), renewing running leases;
- commands:    `worker:{id}:commands` (recycle);
- maintenance: re-queue expired leases of lost workers, stop excess idle processes.
SIGTERM: stop claiming, let running executions finish, unregister, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
import time
from collections import deque

from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from ..contracts.names import HEARTBEAT_CHANNEL, worker_commands_channel, worker_key
from ..contracts.wire import (
    ExecutionContext,
    ExecutionResult,
    WireFormatError,
    WorkerHeartbeat,
    describe_validation_error,
    parse_command,
    registration_fields,
    to_wire,
)
from ..redis_connect import RedisAccess, redis_client
from . import metrics
from .config import WorkerConfig
from .pool import ProcessPool
from .queue import Claimed, Queue

log = logging.getLogger(__name__)

# A burst of state changes (a wave of executions starting) becomes one heartbeat.
HEARTBEAT_COALESCE_SECONDS = 0.05
# How long the dispatcher blocks for a wake-up token before claiming anyway
# (finds work enqueued by producers that do not push tokens).
WAKE_UP_BLOCK_SECONDS = 1.0
RETRY_SECONDS = 0.5


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.started_at = dt.datetime.now(dt.UTC)
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()
        self.capacity_changed = asyncio.Event()
        self.outbox: deque[ExecutionResult] = deque()
        self.outbox_ready = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self.finished = False
        self.pool = ProcessPool(
            worker_id=config.worker_id,
            min_processes=config.min_workers,
            max_processes=config.max_workers,
            execution_timeout=config.execution_timeout_seconds,
            graceful_shutdown=config.graceful_shutdown_seconds,
            recycle_after=config.recycle_after_executions,
            idle_seconds=config.process_idle_seconds,
            on_result=self._on_result,
            on_change=self._on_change,
        )
        access, ca_file = RedisAccess(config.redis_url), config.redis_tls_ca_file
        self.redis = redis_client(access, name="workerpool-worker", ca_file=ca_file, health_check_interval=30)
        self.blocking = redis_client(access, name="workerpool-worker-wait", ca_file=ca_file)
        # With replicas (Sentinel), a result counts as written once one replica holds it too.
        self.queue = Queue(self.redis, config.queue_key, durable=access.has_replicas)

    # --- pool callbacks -------------------------------------------------------------------

    def _on_change(self) -> None:
        self.changed.set()
        self.capacity_changed.set()

    def _on_result(self, result: ExecutionResult) -> None:
        metrics.record_result(result)
        self.outbox.append(result)
        self.outbox_ready.set()

    # --- main -------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._startup()
        if self.config.metrics_port is not None:
            metrics.serve(self.config.metrics_port, self.pool.count)
            log.info("metrics on port %d", self.config.metrics_port)
        self.pool.start()
        tasks = [
            asyncio.create_task(coro, name=name)
            for name, coro in (
                ("dispatch", self._dispatch_loop()),
                ("results", self._results_loop()),
                ("heartbeat", self._heartbeat_loop()),
                ("commands", self._commands_loop()),
                ("maintenance", self._maintenance_loop()),
            )
        ]
        await self.stopping.wait()
        log.info("stopping: no new work; waiting for %d running executions", self.pool.count("busy"))
        # The dispatcher notices `stopping` between claims (never mid-claim, so a
        # claimed execution is always started or left with a live lease).
        await tasks[0]
        await self.pool.wait_idle()
        await self.pool.close()
        await self._drain_outbox()
        self.finished = True  # loops that see a (cancellation-induced) Redis error now exit
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._unregister()
        await self.redis.aclose()
        await self.blocking.aclose()
        log.info("worker %s stopped", self.config.worker_id)
        return 0

    def request_stop(self) -> None:
        self.stopping.set()
        self.pool.closing = True  # no new or replacement processes from here on
        self.capacity_changed.set()

    async def _startup(self) -> None:
        """Wait for Redis, then re-queue what a previous incarnation of this worker held."""
        while True:
            try:
                moved = await self.queue.requeue_owned_by(self.config.worker_id)
                break
            except RedisError as exc:
                log.warning("redis not reachable yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
        if moved:
            log.warning(
                "re-queued %d executions held by a previous run of %s: %s",
                len(moved),
                self.config.worker_id,
                ", ".join(moved),
            )
        log.info(
            "worker %s started: processes %d..%d, queue %s",
            self.config.worker_id,
            self.config.min_workers,
            self.config.max_workers,
            self.config.queue_key,
        )

    # --- dispatch -----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self.stopping.is_set():
            self.capacity_changed.clear()
            if self.pool.capacity() == 0:
                await self.capacity_changed.wait()
                continue
            try:
                claimed = await self.queue.claim(self.config.worker_id, self.config.lease_seconds)
                if claimed is None:
                    await self._wait_for_work_or_stop()
                    continue
            except ResponseError as exc:  # a script error says what is wrong; it holds no URL
                log.error("claim failed: %s; retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except RedisError as exc:
                log.warning("claim failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if claimed.enqueued_at is not None:
                metrics.QUEUE_WAIT.observe(max(0.0, time.time() - claimed.enqueued_at))
            # Started even when stopping was requested meanwhile: it is ours now.
            if not self._start(claimed):
                await self._release(claimed.execution_id)

    async def _wait_for_work_or_stop(self) -> None:
        waiting = asyncio.ensure_future(self.queue.wait_for_work(self.blocking, WAKE_UP_BLOCK_SECONDS))
        stopping = asyncio.ensure_future(self.stopping.wait())
        done, pending = await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()  # a wake-up token is only a hint: dropping one loses nothing
        if waiting in done:
            waiting.result()  # surface a Redis error to the caller

    def _start(self, claimed: Claimed) -> bool:
        """Run it, or fail it if it cannot run anywhere; False: no process here after all."""
        eid = claimed.execution_id
        if claimed.attempts > self.config.max_attempts:
            self._fail(
                eid,
                "WorkerLost",
                f"abandoned after {claimed.attempts - 1} attempts whose worker was lost before it finished",
            )
            return True
        if claimed.context is None:
            self._fail(eid, "ContextMissing", f"no execution context at bifrost:exec:{eid}:context")
            return True
        try:
            ctx = ExecutionContext.model_validate(json.loads(claimed.context))
        except (ValueError, ValidationError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            self._fail(eid, "InvalidContext", f"invalid execution context: {detail}")
            return True
        proc = self.pool.acquire()
        if proc is None:
            # Capacity was checked before claiming; since then the worker began to stop
            # or a process died. Not this execution's failure: it goes back to the queue.
            return False
        self.pool.run(proc, eid, ctx.function, ctx.parameters, ctx.timeout_seconds)
        return True

    async def _release(self, execution_id: str) -> None:
        try:
            released = await self.queue.release(execution_id)
        except RedisError as exc:  # its lease expires and the expired-lease requeue takes it
            log.warning("could not give back %s (%s): it is re-queued when its lease expires", execution_id, exc)
            return
        log.info("gave back %s: no process to run it here", execution_id)
        if not released:
            log.warning("%s: its lease was already gone when it was given back", execution_id)

    def _fail(self, execution_id: str, error_type: str, error: str) -> None:
        log.warning("execution %s failed before running: %s: %s", execution_id, error_type, error)
        self._on_result(
            ExecutionResult(
                execution_id=execution_id,
                success=False,
                error=error,
                error_type=error_type,
                duration_ms=0.0,
                worker_id=self.config.worker_id,
            )
        )

    # --- results --------------------------------------------------------------------------------

    async def _results_loop(self) -> None:
        while True:
            await self.outbox_ready.wait()
            self.outbox_ready.clear()
            await self._drain_outbox()

    async def _drain_outbox(self) -> None:
        async with self._drain_lock:  # the results loop and shutdown both drain
            await self._drain_locked()

    async def _drain_locked(self) -> None:
        while self.outbox:
            try:
                await self.queue.finish(self.outbox[0], self.config.result_ttl_seconds)
            except RedisError as exc:
                # Keep it: a result is never dropped because Redis blinked.
                log.warning(
                    "writing result of %s failed (%s); %d results waiting",
                    self.outbox[0].execution_id,
                    type(exc).__name__,
                    len(self.outbox),
                )
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.outbox.popleft()

    # --- heartbeat ----------------------------------------------------------------------------------

    def heartbeat(self) -> WorkerHeartbeat:
        processes = self.pool.snapshot()
        return WorkerHeartbeat(
            type="worker_heartbeat",
            worker_id=self.config.worker_id,
            timestamp=dt.datetime.now(dt.UTC),
            started_at=self.started_at,
            hostname=self.config.worker_id,
            min_workers=self.config.min_workers,
            max_workers=self.config.max_workers,
            pool_size=len(processes),
            idle_count=sum(1 for p in processes if p.state == "idle"),
            busy_count=sum(1 for p in processes if p.state == "busy"),
            processes=processes,
            pool=self.config.pool_name,
            namespace=self.config.pool_namespace,
        )

    async def publish_heartbeat(self) -> None:
        hb = self.heartbeat()
        payload = json.dumps(to_wire(hb))
        key = worker_key(self.config.worker_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping=dict(registration_fields(hb, heartbeat_json=payload)))  # type: ignore[arg-type]
            p.expire(key, int(self.config.ttl + 0.999))
            p.publish(HEARTBEAT_CHANNEL, payload)
            await p.execute()
        # Held: what runs, and what finished but whose result is not written yet (Redis was away):
        # a lease left to expire there would re-run an execution that already ran.
        held = self.pool.running_execution_ids() + [r.execution_id for r in self.outbox]
        await self.queue.renew(held, self.config.lease_seconds)

    async def _heartbeat_loop(self) -> None:
        while not self.finished:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=self.config.heartbeat_interval_seconds)
            if self.changed.is_set():
                await asyncio.sleep(HEARTBEAT_COALESCE_SECONDS)
            self.changed.clear()
            try:
                await self.publish_heartbeat()
            except RedisError as exc:
                log.warning("heartbeat failed (%s)", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)

    async def _unregister(self) -> None:
        try:
            await self.redis.delete(worker_key(self.config.worker_id))
        except RedisError as exc:
            log.warning("could not unregister (%s); the registration expires by its TTL", type(exc).__name__)

    # --- commands -------------------------------------------------------------------------------------

    async def _commands_loop(self) -> None:
        channel = worker_commands_channel(self.config.worker_id)
        while not self.finished:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.changed.set()  # announce ourselves as soon as we can hear commands
                async for message in pubsub.listen():
                    self.handle_command(message.get("data"))
            except RedisError as exc:
                log.warning("command subscription lost (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def handle_command(self, raw: object) -> None:
        if not isinstance(raw, bytes | str):
            return
        try:
            command = parse_command(raw)
        except WireFormatError as exc:
            log.warning("ignoring malformed or unknown command: %s", exc)
            return
        outcome = self.pool.recycle(command.pid)
        log.info("recycle command (pid %s): %s", command.pid, outcome)

    # --- maintenance ------------------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        tick = max(0.1, min(1.0, self.config.heartbeat_interval_seconds, self.config.process_idle_seconds or 1.0))
        since_requeue = 0.0
        while not self.finished:
            await asyncio.sleep(tick)
            self.pool.scale_down_idle()
            since_requeue += tick
            if since_requeue >= self.config.heartbeat_interval_seconds:
                since_requeue = 0.0
                try:
                    moved = await self.queue.requeue_expired()
                except RedisError as exc:
                    log.warning("lease check failed (%s)", type(exc).__name__)
                    continue
                if moved:
                    log.warning("re-queued %d executions whose worker was lost: %s", len(moved), ", ".join(moved))


def run_worker() -> int:
    """Entry point of `workerpool worker`."""
    config = WorkerConfig.from_env()
    return asyncio.run(Worker(config).run())
