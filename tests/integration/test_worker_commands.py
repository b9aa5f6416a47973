"""A recycle's publish against a real redis-server: sent, and recorded, only when every
target worker is subscribed at that instant (a PUBLISH keeps nothing, so one sent to a
worker between subscriptions is lost), and then exactly once; counted where the worker
hears it, on its own subscription."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from devcluster.redis_server import RedisServer
from devcluster.waiting import async_wait_until
from workerpool.contracts.names import worker_commands_channel
from workerpool.controller.adapters.worker_commands import WorkerCommands
from workerpool.protocols import SEED

pytestmark = pytest.mark.redis

KEY = "bifrost:operator:recycle:uid:w-1@1"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


async def heard(client: aioredis.Redis, channel: str, into: list[dict[str, object]]) -> asyncio.Task[None]:
    """A worker's subscription: every command it hears, appended as it arrives."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)

    async def listen() -> None:
        async for message in pubsub.listen():
            into.append(json.loads(message["data"]))

    return asyncio.create_task(listen())


async def test_nothing_is_sent_or_recorded_until_every_target_listens_then_once(client: aioredis.Redis) -> None:
    commands = WorkerCommands(client, SEED)
    one, two = worker_commands_channel("w-1"), worker_commands_channel("w-2")
    messages = [SEED.recycle_message("w-1", None, "r"), SEED.recycle_message("w-2", 7, "r")]
    got: dict[str, list[dict[str, object]]] = {one: [], two: []}
    listening = [await heard(client, one, got[one])]

    waits = await commands.publish_once(KEY, '{"request": "r"}', messages, 60)
    assert waits.outcome == "not_listening" and waits.not_listening == (two,)
    assert not await client.exists(KEY), "a record written for a recycle nobody heard"

    listening.append(await heard(client, two, got[two]))
    sent = await commands.publish_once(KEY, '{"request": "r"}', messages, 60)
    assert sent.outcome == "published" and sent.record == '{"request": "r"}'
    await async_wait_until(lambda: got[one] and got[two], within=5, what="both workers to hear their command")
    again = await commands.publish_once(KEY, '{"request": "other"}', messages, 60)
    assert again.outcome == "handled_before" and again.record == '{"request": "r"}'
    # Redis delivers a channel's messages in order: a duplicate would arrive before these markers.
    for channel in (one, two):
        await client.publish(channel, '{"marker": true}')
    await async_wait_until(lambda: all(m[-1:] == [{"marker": True}] for m in got.values()), within=5, what="markers")
    assert got == {
        one: [{"type": "recycle", "pid": None}, {"marker": True}],
        two: [{"type": "recycle", "pid": 7}, {"marker": True}],
    }
    for task in listening:
        task.cancel()
    await asyncio.gather(*listening, return_exceptions=True)
