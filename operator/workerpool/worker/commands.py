"""The worker's command listener: `worker:{id}:commands` (recycle a process),
resubscribed whenever the subscription breaks. A malformed command is logged
and dropped; it never stops the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..contracts.names import worker_commands_channel
from ..contracts.wire import WireFormatError, parse_command
from . import metrics
from .config import RETRY_SECONDS
from .process_pool import ProcessPool

log = logging.getLogger(__name__)


class CommandListener:
    def __init__(self, redis: aioredis.Redis, worker_id: str, pool: ProcessPool, on_listening: Callable[[], None]):
        self.redis, self.pool = redis, pool
        self.channel = worker_commands_channel(worker_id)
        self.on_listening = on_listening  # announce ourselves as soon as we can hear commands

    async def run(self, finished: Callable[[], bool]) -> None:
        while not finished():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.on_listening()
                async for message in pubsub.listen():
                    self.handle(message.get("data"))
            except RedisError as exc:
                log.warning("command subscription lost (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisError, RuntimeError):
                    await pubsub.aclose()

    def handle(self, raw: object) -> None:
        """Carry out one command; what came of it is counted (workerpool_worker_commands_total) and logged."""
        if not isinstance(raw, bytes | str):
            return
        try:
            command = parse_command(raw)
        except WireFormatError as exc:
            metrics.COMMANDS.labels("malformed").inc()
            log.warning("ignoring malformed or unknown command: %s", exc)
            return
        refused = self.pool.recycle(command.pid)
        metrics.COMMANDS.labels(refused.outcome if refused else "recycling").inc()
        if refused is not None:
            log.info("recycle command (pid %s): %s", command.pid, refused.message)
