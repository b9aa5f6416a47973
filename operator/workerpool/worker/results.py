"""Results waiting to be written: kept in memory, in order, and retried while
Redis is unreachable, so a result is never dropped because Redis blinked (its
lease is renewed meanwhile: see heartbeat.py)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from redis.exceptions import RedisError

from ..contracts.wire import ExecutionResult
from . import metrics
from .config import RETRY_SECONDS
from .queue import Queue

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, queue: Queue, ttl_seconds: int) -> None:
        self.queue, self.ttl_seconds = queue, ttl_seconds
        self.waiting: deque[ExecutionResult] = deque()
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()  # the results loop and shutdown both drain

    def add(self, result: ExecutionResult) -> None:
        metrics.record_result(result)
        self.waiting.append(result)
        self._ready.set()

    def execution_ids(self) -> list[str]:
        return [r.execution_id for r in self.waiting]

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            await self.drain()

    async def drain(self) -> None:
        async with self._lock:
            while self.waiting:
                try:
                    await self.queue.finish(self.waiting[0], self.ttl_seconds)
                except RedisError as exc:
                    first, count = self.waiting[0].execution_id, len(self.waiting)
                    log.warning(
                        "writing result of %s failed (%s); %d results waiting", first, type(exc).__name__, count
                    )
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self.waiting.popleft()
