"""The worker's heartbeat: its registration hash (with a TTL) and one message on
the heartbeat channel, every interval AND shortly after any state change
(coalesced); each one renews the leases of what the worker holds."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..contracts.names import HEARTBEAT_CHANNEL, worker_key
from ..contracts.wire import WorkerHeartbeat, registration_fields, to_wire
from .config import RETRY_SECONDS, WorkerConfig
from .process_pool import ProcessPool
from .queue import Queue

log = logging.getLogger(__name__)

# A burst of state changes (a wave of executions starting) becomes one heartbeat.
HEARTBEAT_COALESCE_SECONDS = 0.05


class Heartbeat:
    def __init__(
        self,
        config: WorkerConfig,
        redis: aioredis.Redis,
        pool: ProcessPool,
        queue: Queue,
        unwritten: Callable[[], list[str]],
    ) -> None:
        self.config, self.redis, self.pool, self.queue = config, redis, pool, queue
        self.unwritten = unwritten  # finished executions whose results are not written yet
        self.started_at = dt.datetime.now(dt.UTC)
        self.changed = asyncio.Event()

    def build(self) -> WorkerHeartbeat:
        processes = self.pool.snapshot()
        config = self.config
        return WorkerHeartbeat(
            type="worker_heartbeat",
            worker_id=config.worker_id,
            timestamp=dt.datetime.now(dt.UTC),
            started_at=self.started_at,
            hostname=config.worker_id,
            # Processes in this pod, under the seed's names (see process_pool.py); not the pool's pods.
            min_workers=config.min_workers,
            max_workers=config.max_workers,
            pool_size=len(processes),
            idle_count=sum(1 for p in processes if p.state == "idle"),
            busy_count=sum(1 for p in processes if p.state == "busy"),
            processes=processes,
            pool=config.pool_name,
            namespace=config.pool_namespace,
        )

    async def publish(self) -> None:
        hb = self.build()
        payload = json.dumps(to_wire(hb))
        key = worker_key(self.config.worker_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping=dict(registration_fields(hb, heartbeat_json=payload)))  # type: ignore[arg-type]
            p.expire(key, int(self.config.ttl + 0.999))
            p.publish(HEARTBEAT_CHANNEL, payload)
            await p.execute()
        # Held: what runs, and what finished but whose result is not written yet (Redis was away):
        # a lease left to expire there would re-run an execution that already ran.
        held = self.pool.running_execution_ids() + self.unwritten()
        await self.queue.renew(held, self.config.lease_seconds)

    async def run(self, finished: Callable[[], bool]) -> None:
        while not finished():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=self.config.heartbeat_interval_seconds)
            if self.changed.is_set():
                await asyncio.sleep(HEARTBEAT_COALESCE_SECONDS)
            self.changed.clear()
            try:
                await self.publish()
            except RedisError as exc:
                log.warning("heartbeat failed (%s)", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)

    async def unregister(self) -> None:
        try:
            await self.redis.delete(worker_key(self.config.worker_id))
        except RedisError as exc:
            log.warning("could not unregister (%s); the registration expires by its TTL", type(exc).__name__)
