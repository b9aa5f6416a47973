"""Both protocols' hubs on one real redis-server while a flood of hostile input arrives:
mutations of the recorded messages (the seed's heartbeat, Bifrost's samples) with the values
that broke the operator before (infinities, 2^64, naive times, thousands of processes,
megabyte strings), raw noise, and keys of every type written where the workers' keys go.
Two pools (one per protocol) keep their own well-behaved worker heartbeating throughout.
At the end every loop of both hubs is alive, neither hub reports a fault, each pool saw its
own worker and no other, and each good worker's report is what it sent."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
import redis

from devcluster.heartbeats import heartbeat_payload
from devcluster.redis_server import RedisServer
from devcluster.waiting import async_wait_until
from tests.integration.test_bifrost_wire import Recorder
from tests.unit.test_wire import SEED_HEARTBEAT
from workerpool.contracts.names import HEARTBEAT_CHANNEL
from workerpool.controller.adapters.redis_hub import RedisHub
from workerpool.controller.ports import Subscriber
from workerpool.protocols import BIFROST, SEED
from workerpool.protocols.bifrost import EVENTS_CHANNEL, registration_key, snapshot_key
from workerpool.redis_connect import RedisAccess

pytestmark = [pytest.mark.faults, pytest.mark.redis]

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "bifrost"
BIFROST_BUSY = json.loads((SAMPLES / "heartbeat-busy.json").read_text())
MESSAGES = 600
NASTY: list[Any] = [
    float("inf"), -1, 2**64, 10**30, 1e400, "", "x" * 5000, None, [], {}, True, "2026-01-01T00:00:00",
    {"nested": [[[[]]]]}, -0.0, "9" * 5000,
]  # fmt: skip


def mutate(rng: random.Random, base: dict[str, Any], worker_id: str) -> bytes:
    """One hostile variant of a real message, naming a worker no pool owns (or a good one's id)."""
    message = json.loads(json.dumps(base))
    message["worker_id"] = rng.choice([worker_id, "a-good", "b-good", "x" * 300])
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*message, "processes", "pool", "namespace", "timestamp", "started_at"])
        choice = rng.random()
        if choice < 0.6:
            message[key] = rng.choice(NASTY)
        elif choice < 0.8:
            message.pop(key, None)
        else:
            message["processes"] = [{"pid": rng.randint(-5, 5)}] * rng.choice([1, 2000, 40_000])
    text = json.dumps(message, allow_nan=True).replace("Infinity", "1e400")
    return text.encode() if rng.random() < 0.9 else text.encode()[: rng.randint(0, 200)]


def write_hostile_key(rng: random.Random, r: redis.Redis, n: int) -> None:
    key = rng.choice([f"worker:x-{n}", f"bifrost:pool:x-{n}", f"bifrost:pool:x-{n}:heartbeat", "bifrost:queue:pending"])
    kind = rng.randrange(5)
    r.delete(key)
    if kind == 0:
        r.set(key, rng.choice(["1", "x" * 300_000, json.dumps({**BIFROST_BUSY, "worker_id": f"x-{n}"})]))
    elif kind == 1:
        fields = {
            "started_at": rng.choice(["2026-01-01T00:00:00", "nope", "2026-01-01T00:00:00+00:00"]),
            "pool_size": rng.choice(["1", "9" * 5000, "-1"]),
            "heartbeat": "x" * rng.choice([1, 300_000]),
        }
        r.hset(key, mapping=fields)
    elif kind == 2:
        r.lpush(key, "a", "b")
    elif kind == 3:
        r.zadd(key, {"e": 1.0})
    else:
        r.sadd(key, "s")


def good_seed(r: redis.Redis) -> None:
    key, fields, payload = heartbeat_payload("a-good", True, dt.datetime.now(dt.UTC), "seedpool", "ns")
    r.hset(key, mapping=fields)  # type: ignore[arg-type]
    r.expire(key, 30)
    r.publish(HEARTBEAT_CHANNEL, payload)


def good_bifrost(r: redis.Redis) -> None:
    now = dt.datetime.now(dt.UTC).isoformat()
    beat = {**BIFROST_BUSY, "worker_id": "b-good", "hostname": "b-good", "timestamp": now}
    r.hset(registration_key("b-good"), mapping={"hostname": "b-good", "started_at": beat["started_at"]})
    r.set(snapshot_key("b-good"), json.dumps(beat), ex=60)
    r.publish(EVENTS_CHANNEL, json.dumps(beat))


async def test_both_hubs_survive_a_flood_of_hostile_input_and_keep_their_pools_right(redis_server: RedisServer) -> None:
    r = redis.Redis.from_url(redis_server.url)
    access = RedisAccess(redis_server.url)
    seed_hub = RedisHub(access, SEED, resync_seconds=0.3, queue_poll_seconds=0.05, max_message_bytes=256 * 1024)
    bifrost_hub = RedisHub(access, BIFROST, resync_seconds=0.3, queue_poll_seconds=0.05, max_message_bytes=256 * 1024)
    seed_pool, bifrost_pool = Recorder({"a-good"}), Recorder({"b-good"})
    seed_hub.subscribe(Subscriber("ns", "seedpool", "bifrost:queue:pending", 5.0, seed_pool))
    bifrost_hub.subscribe(Subscriber("ns", "bifrostpool", None, 5.0, bifrost_pool))
    rng = random.Random(20261207)
    try:
        seed_hub.start()
        bifrost_hub.start()
        for n in range(MESSAGES):
            channel, base = rng.choice([(HEARTBEAT_CHANNEL, SEED_HEARTBEAT), (EVENTS_CHANNEL, BIFROST_BUSY)])
            r.publish(channel, mutate(rng, base, f"x-{n}"))
            if n % 10 == 0:
                write_hostile_key(rng, r, n)
                good_seed(r)
                good_bifrost(r)
                await asyncio.sleep(0.02)  # the hubs' loops run between the bursts
        good_seed(r)
        good_bifrost(r)
        await async_wait_until(
            lambda: seed_hub.fault is None and bifrost_hub.fault is None and seed_pool.reports and bifrost_pool.reports,
            within=15,
            what="both hubs trusted, both good workers heard",
        )
        for hub in (seed_hub, bifrost_hub):
            assert all(not t.done() for t in hub.tasks), [t for t in hub.tasks if t.done()]
        assert {rep.worker_id for rep in seed_pool.reports} == {"a-good"}
        assert {rep.worker_id for rep in bifrost_pool.reports} == {"b-good"}
        assert seed_pool.reports[-1].busy_count == 1
        assert bifrost_pool.reports[-1].busy_count == BIFROST_BUSY["busy_count"]
        await async_wait_until(
            lambda: (seed_pool.resyncs and "a-good" in seed_pool.resyncs[-1]) or None, within=10, what="a seed resync"
        )
        assert all(set(regs) <= {"a-good"} for regs in seed_pool.resyncs)
        assert all(set(regs) <= {"b-good"} for regs in bifrost_pool.resyncs)
    finally:
        await seed_hub.stop()
        await bifrost_hub.stop()
