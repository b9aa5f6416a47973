"""`workerpool worker`: one worker (one pod) = one process pool fed from the queue.

Tasks on one asyncio loop, each its own module:
- dispatch (dispatch.py):  claim with a lease whenever a process is idle or the
                           pool may grow; block on the queue's wake-up list when empty;
- results (results.py):    write results (Lua: result + publish + lease release);
                           kept in memory and retried while Redis is unreachable;
- heartbeat (heartbeat.py): registration hash + TTL + publish, every interval AND
                           shortly after any state change, renewing running leases;
- commands (commands.py):  `worker:{id}:commands` (recycle);
- maintenance (here):      re-queue expired leases of lost workers, stop excess idle processes.
The process pool is process_pool.py, the queue client queue.py, the child child.py.
SIGTERM: stop claiming, let running executions finish, unregister, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from redis.exceptions import RedisError

from ..redis_connect import RedisAccess, redis_client
from . import metrics
from .commands import CommandListener
from .config import RETRY_SECONDS, WorkerConfig
from .dispatch import Dispatcher
from .heartbeat import Heartbeat
from .process_pool import PoolLimits, ProcessPool
from .queue import Queue
from .results import Outbox

log = logging.getLogger(__name__)


def pool_limits(config: WorkerConfig) -> PoolLimits:
    return PoolLimits(
        min_processes=config.min_workers,
        max_processes=config.max_workers,
        execution_timeout=config.execution_timeout_seconds,
        graceful_shutdown=config.graceful_shutdown_seconds,
        recycle_after=config.recycle_after_executions,
        idle_seconds=config.process_idle_seconds,
    )


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.finished = False  # loops that see a (cancellation-induced) Redis error now exit
        access, ca_file = RedisAccess(config.redis_url), config.redis_tls_ca_file
        self.redis = redis_client(access, name="workerpool-worker", ca_file=ca_file, health_check_interval=30)
        self.blocking = redis_client(access, name="workerpool-worker-wait", ca_file=ca_file)
        # With replicas (Sentinel), a result counts as written once one replica holds it too.
        self.queue = Queue(self.redis, config.queue_key, durable=access.has_replicas)
        self.outbox = Outbox(self.queue, config.result_ttl_seconds)
        self.pool = ProcessPool(config.worker_id, pool_limits(config), self.outbox.add, self._on_change)
        self.dispatcher = Dispatcher(config, self.queue, self.blocking, self.pool, self.outbox)
        self.heartbeat = Heartbeat(config, self.redis, self.pool, self.queue, self.outbox.execution_ids)
        self.commands = CommandListener(self.redis, config.worker_id, self.pool, self.heartbeat.changed.set)

    def _on_change(self) -> None:
        self.heartbeat.changed.set()
        self.dispatcher.capacity_changed.set()

    def _finished(self) -> bool:
        return self.finished

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._startup()
        if self.config.metrics_port is not None:
            metrics.serve(self.config.metrics_port, self.pool.count)
            log.info("metrics on port %d", self.config.metrics_port)
        self.pool.start()
        dispatch = asyncio.create_task(self.dispatcher.run(), name="dispatch")
        others = [
            asyncio.create_task(coro, name=name)
            for name, coro in (
                ("results", self.outbox.run()),
                ("heartbeat", self.heartbeat.run(self._finished)),
                ("commands", self.commands.run(self._finished)),
                ("maintenance", self._maintenance_loop()),
            )
        ]
        await self.dispatcher.stopping.wait()
        log.info("stopping: no new work; waiting for %d running executions", self.pool.count("busy"))
        await dispatch  # it notices `stopping` between claims, never mid-claim
        await self._shut_down(others)
        return 0

    async def _shut_down(self, loops: list[asyncio.Task[None]]) -> None:
        await self.pool.wait_idle()
        await self.pool.close()
        await self.outbox.drain()
        self.finished = True
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.heartbeat.unregister()
        await self.redis.aclose()
        await self.blocking.aclose()
        log.info("worker %s stopped", self.config.worker_id)

    def request_stop(self) -> None:
        self.dispatcher.stopping.set()
        self.pool.closing = True  # no new or replacement processes from here on
        self.dispatcher.capacity_changed.set()

    async def _startup(self) -> None:
        """Wait for Redis, then re-queue what a previous incarnation of this worker held."""
        config = self.config
        while True:
            try:
                moved = await self.queue.requeue_owned_by(config.worker_id)
                break
            except RedisError as exc:
                log.warning("redis not reachable yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
        if moved:
            count, ids = len(moved), ", ".join(moved)
            log.warning("re-queued %d executions held by a previous run of %s: %s", count, config.worker_id, ids)
        log.info(
            "worker %s started: processes %d..%d, queue %s",
            *(config.worker_id, config.min_workers, config.max_workers, config.queue_key),
        )

    async def _maintenance_loop(self) -> None:
        interval = self.config.heartbeat_interval_seconds
        tick = max(0.1, min(1.0, interval, self.config.process_idle_seconds or 1.0))
        since_requeue = 0.0
        while not self.finished:
            await asyncio.sleep(tick)
            self.pool.scale_down_idle()
            since_requeue += tick
            if since_requeue >= interval:
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
