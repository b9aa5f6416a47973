"""The operator's Redis scripts against a real redis-server: retiring a worker for
a scale-down (undone when it is busy) and for an eviction (kept while it is busy)."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from devcluster.redis_server import RedisServer
from workerpool.contracts.names import held_key, worker_retiring_key
from workerpool.controller.adapters.worker_commands import WorkerCommands
from workerpool.protocols import SEED

pytestmark = pytest.mark.redis

QUEUE = "bifrost:queue:pending"


async def test_retiring_for_an_eviction_keeps_a_busy_worker_retired_and_says_what_it_holds(
    redis_server: RedisServer,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    client = aioredis.Redis.from_url(redis_server.url)
    commands = WorkerCommands(client, SEED)
    try:
        r.sadd(held_key(QUEUE, "w"), "e-2", "e-1")
        assert await commands.retire_for_eviction("w", QUEUE, 60) == ["e-1", "e-2"]
        assert r.get(worker_retiring_key("w")) == b"1" and 0 < r.ttl(worker_retiring_key("w")) <= 60
        # A scale-down's retire of a busy worker gives up (it may claim again)...
        assert await commands.retire("w", QUEUE, 60) is False
        assert r.get(worker_retiring_key("w")) is None
        # ...an eviction's does not: the drain's next retry marks it again, until it holds nothing.
        assert await commands.retire_for_eviction("w", QUEUE, 60) == ["e-1", "e-2"]
        r.delete(held_key(QUEUE, "w"))
        assert await commands.retire_for_eviction("w", QUEUE, 60) == []
        assert r.get(worker_retiring_key("w")) == b"1"
    finally:
        await client.aclose()
