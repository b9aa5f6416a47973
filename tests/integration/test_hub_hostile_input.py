"""The operator's Redis hub against a real redis-server and what anyone on that Redis may
write: a key of another type, an oversized or out-of-bounds message, a bug that escapes a
loop. Asserted on the hub's own outputs: what each pool is told, the hub's fault, and the
refusal counters. Each case stalled every pool on the Redis, or ended a loop silently,
before this work (checked against the parent commit)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis
from prometheus_client import REGISTRY

from devcluster.redis_server import RedisServer
from devcluster.waiting import async_wait_until
from tests.integration.test_redis_hub import NS, POOL, Recorder, subscribed, write
from tests.unit.test_wire import SEED_HEARTBEAT
from workerpool.contracts.names import HEARTBEAT_CHANNEL
from workerpool.controller.adapters.redis_hub import RedisHub
from workerpool.protocols import SEED
from workerpool.redis_connect import Problem, RedisAccess

pytestmark = pytest.mark.redis

LIMIT = 64 * 1024


@pytest.fixture
async def hub(redis_server: RedisServer) -> AsyncIterator[RedisHub]:
    h = RedisHub(
        RedisAccess(redis_server.url), SEED, resync_seconds=0.2, queue_poll_seconds=0.05, max_message_bytes=LIMIT
    )
    try:
        yield h
    finally:
        await h.stop()


def refused(kind: str, reason: str) -> float:
    labels = {"kind": kind, "reason": reason}
    return REGISTRY.get_sample_value("workerpool_malformed_redis_data_total", labels) or 0.0


def crashes(loop: str) -> float:
    return REGISTRY.get_sample_value("workerpool_loop_crashes_total", {"loop": loop}) or 0.0


async def test_a_key_of_another_type_is_one_refused_registration_not_a_redis_fault(
    redis_server: RedisServer, hub: RedisHub
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    rec = Recorder()
    write(r, "w-good", publish=False)
    r.set("worker:w-string", "1")  # anyone with write access may do this
    r.set("q", "not a sorted set")  # and this, to the pool's queue key
    before = refused("registration", "wrong_type")
    hub.subscribe(rec.subscriber())
    hub.start()
    await async_wait_until(lambda: len(rec.resyncs) >= 2, within=10, what="two resyncs")
    present, regs = rec.resyncs[-1]
    assert set(regs) <= {"w-good"} and "w-good" in present
    assert hub.fault is None and hub.worker_fault is None, hub.fault
    assert refused("registration", "wrong_type") > before
    # The queue key alone reads as unavailable (this pool's demand), not the whole Redis.
    await async_wait_until(lambda: hub.queue_fault("q"), within=5, what="the queue's fault")
    assert "WRONGTYPE" in (hub.queue_fault("q") or "")
    assert hub.queue_error is None and hub.queue("q") is None
    r.delete("q")
    await async_wait_until(lambda: hub.queue("q") is not None, within=5, what="a reading")


async def test_oversized_and_out_of_bounds_messages_are_refused_and_the_next_one_is_heard(
    redis_server: RedisServer, hub: RedisHub
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    rec = Recorder()
    hub.subscribe(rec.subscriber())
    hub.start()
    await async_wait_until(lambda: subscribed(r), within=10, what="the heartbeat subscription")
    big, bad = refused("heartbeat", "too_large"), refused("heartbeat", "invalid")
    huge = {**SEED_HEARTBEAT, "worker_id": "w-huge", "pool": POOL, "namespace": NS}
    huge["processes"] = [{"pid": -1}] * 200_000  # about 2 MB: refused by size, never parsed
    r.publish(HEARTBEAT_CHANNEL, json.dumps(huge))
    infinite = {**SEED_HEARTBEAT, "worker_id": "w-inf", "pool": POOL, "namespace": NS, "pool_size": 10**30}
    r.publish(HEARTBEAT_CHANNEL, json.dumps(infinite))
    naive = {**SEED_HEARTBEAT, "worker_id": "w-naive", "pool": POOL, "namespace": NS, "timestamp": "2026-01-01T00:00"}
    r.publish(HEARTBEAT_CHANNEL, json.dumps(naive))
    write(r, "w-after", publish=True)
    await async_wait_until(lambda: "w-after" in rec.heard(), within=10, what="the next good heartbeat")
    assert rec.heard() == {"w-after"}
    assert refused("heartbeat", "too_large") == big + 1
    assert refused("heartbeat", "invalid") == bad + 2
    assert hub.fault is None


async def test_a_registration_over_the_limit_is_refused_unparsed(redis_server: RedisServer, hub: RedisHub) -> None:
    r = redis.Redis.from_url(redis_server.url)
    rec = Recorder()
    write(r, "w-fat", publish=False)
    r.hset("worker:w-fat", "padding", "x" * (LIMIT + 1))
    r.hset("worker:w-digits", mapping={"started_at": "2026-11-26T09:00:00+00:00", "pool_size": "9" * 5000})
    before_big, before_bad = refused("registration", "too_large"), refused("registration", "invalid")
    hub.subscribe(rec.subscriber())
    hub.start()
    await async_wait_until(lambda: rec.resyncs, within=10, what="a resync")
    assert rec.resyncs[0][1] == {}
    assert refused("registration", "too_large") > before_big
    assert refused("registration", "invalid") > before_bad
    assert hub.fault is None


async def test_a_crash_in_the_heartbeat_loop_is_shown_then_the_loop_is_back(
    redis_server: RedisServer, hub: RedisHub
) -> None:
    """A bug in a listener escapes the loop: the supervisor restarts it; meanwhile the pools
    read LoopRestarting, and after a full resync the hub is trusted again."""
    r = redis.Redis.from_url(redis_server.url)
    rec = Recorder()
    boom = {"armed": True}
    heard = rec.on_heartbeat

    def exploding(report: object) -> None:
        if boom.pop("armed", False):
            raise RuntimeError("a bug nobody foresaw")
        heard(report)  # type: ignore[arg-type]

    rec.on_heartbeat = exploding  # type: ignore[method-assign]
    faults: list[object] = []
    rec.on_health = lambda: faults.append(hub.fault)  # type: ignore[method-assign]
    before = crashes("hub-heartbeats")
    hub.subscribe(rec.subscriber())
    hub.start()
    await async_wait_until(lambda: subscribed(r) and hub.fault is None, within=10, what="the hub up")
    write(r, "w-1", publish=True)
    await async_wait_until(lambda: crashes("hub-heartbeats") == before + 1, within=10, what="the crash counted")
    assert any(f is not None and f.problem is Problem.INTERNAL for f in faults), faults  # type: ignore[attr-defined]
    await async_wait_until(lambda: hub.fault is None, within=15, what="the hub trusted again")
    write(r, "w-1", publish=True)
    await async_wait_until(lambda: "w-1" in rec.heard(), within=10, what="heartbeats heard again")
