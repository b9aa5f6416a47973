"""Giving a claimed execution back (a worker that cannot start it after all): on a real redis-server."""

from __future__ import annotations

import redis.asyncio as aioredis

from devcluster.redis_server import RedisServer
from workerpool.worker.queue import Queue

QUEUE = "bifrost:queue:pending"


async def test_a_released_claim_is_queued_again_in_its_place_and_its_attempt_not_counted(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        q = Queue(client, QUEUE)
        await q.enqueue("first", {"function": "m:f", "parameters": {}}, at=100.0)
        await q.enqueue("second", {"function": "m:f", "parameters": {}}, at=200.0)
        claimed = await q.claim("w1", lease_seconds=30)
        assert claimed is not None and (claimed.execution_id, claimed.attempts) == ("first", 1)
        assert await q.release("first")
        assert not await q.release("first")  # no lease any more: nothing to give back
        assert await client.zscore(QUEUE, "first") == 100.0  # back in its place, ahead of "second"
        assert not await client.smembers(q.held_prefix + "w1")
        again = await q.claim("w2", lease_seconds=30)
        assert again is not None and (again.execution_id, again.attempts) == ("first", 1)
    finally:
        await client.aclose()
