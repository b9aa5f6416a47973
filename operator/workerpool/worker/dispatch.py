"""Dispatch: claim an execution (one Lua script, with a lease) whenever a process
is idle or the pool may grow, and start it; block on the queue's wake-up list
while the queue is empty. It stops between claims, never mid-claim, so a claimed
execution is always started or left with a live lease."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from ..contracts.wire import ExecutionContext, describe_validation_error
from . import metrics
from .config import RETRY_SECONDS, WorkerConfig
from .outcomes import failed_result
from .process_pool import ProcessPool
from .queue import Claimed, Queue
from .results import Outbox

log = logging.getLogger(__name__)

# How long the dispatcher blocks for a wake-up token before claiming anyway
# (finds work enqueued by producers that do not push tokens).
WAKE_UP_BLOCK_SECONDS = 1.0


class Dispatcher:
    def __init__(
        self, config: WorkerConfig, queue: Queue, blocking: aioredis.Redis, pool: ProcessPool, outbox: Outbox
    ) -> None:
        self.config, self.queue, self.blocking, self.pool, self.outbox = config, queue, blocking, pool, outbox
        self.stopping = asyncio.Event()
        self.capacity_changed = asyncio.Event()

    async def run(self) -> None:
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
            lost = f"abandoned after {claimed.attempts - 1} attempts whose worker was lost before it finished"
            self._fail(eid, "WorkerLost", lost)
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
        if not self.config.allows(ctx.function):
            # Anyone who can write the queue names the function: only the pool's own modules run.
            module = ctx.function.partition(":")[0][:200]
            self._fail(eid, "FunctionNotAllowed", f"module {module!r} is not in the pool's allowedModules")
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
        self.outbox.add(failed_result(execution_id, error_type, error, self.config.worker_id))
