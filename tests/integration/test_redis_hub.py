"""The operator's Redis hub against a real redis-server: what a resync reads, and when.

The resync repairs what pub/sub lost. It must re-read the hash of a worker that
pub/sub did not deliver, and must not re-read the ones it did (at 1000 workers
that re-read was most of the operator's CPU), and a broken subscription must be
followed by a full re-read.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis

from devcluster.heartbeats import heartbeat_payload
from devcluster.redis_server import RedisServer
from devcluster.waiting import async_wait_until
from workerpool.contracts.names import HEARTBEAT_CHANNEL
from workerpool.contracts.report import WorkerReport
from workerpool.contracts.wire import QueueStatus
from workerpool.controller.adapters.redis_hub import RedisHub
from workerpool.controller.ports import Subscriber
from workerpool.protocols import SEED
from workerpool.redis_connect import RedisAccess

from ..clocks import FakeClock

pytestmark = pytest.mark.redis

NS, POOL = "ns", "pool"
TRUST = 0.5  # s: heartbeats heard this recently are not re-read


@dataclass
class Recorder:
    pool: str = POOL
    prefix: str = "w-"  # the pod names its pool owns
    heartbeats: list[WorkerReport] = field(default_factory=list)
    resyncs: list[tuple[set[str], dict[str, WorkerReport]]] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    queues: list[QueueStatus] = field(default_factory=list)

    def subscriber(self) -> Subscriber:
        return Subscriber(NS, self.pool, "q", TRUST, self)

    def on_heartbeat(self, report: WorkerReport) -> None:
        self.heartbeats.append(report)

    def on_offline(self, worker_id: str) -> None:
        self.offline.append(worker_id)

    def on_queue(self, status: QueueStatus) -> None:
        self.queues.append(status)

    def on_resync(self, present: set[str], regs: dict[str, WorkerReport]) -> None:
        self.resyncs.append((set(present), dict(regs)))

    def on_health(self) -> None:
        pass

    def owns(self, worker_id: str) -> bool:
        return worker_id.startswith(self.prefix)

    def heard(self) -> set[str]:
        return {hb.worker_id for hb in self.heartbeats}


@pytest.fixture
async def hub(redis_server: RedisServer) -> AsyncIterator[RedisHub]:
    h = RedisHub(RedisAccess(redis_server.url), SEED, resync_seconds=3600, queue_poll_seconds=0.05)
    try:
        yield h
    finally:
        await h.stop()


def write(r: redis.Redis, worker_id: str, *, publish: bool, busy: bool = False, pool: str = POOL) -> None:
    key, fields, payload = heartbeat_payload(worker_id, busy, dt.datetime.now(dt.UTC), pool, NS)
    r.hset(key, mapping=fields)  # type: ignore[arg-type]
    if publish:
        r.publish(HEARTBEAT_CHANNEL, payload)


def subscribed(r: redis.Redis) -> bool:
    return bool(dict(r.pubsub_numsub(HEARTBEAT_CHANNEL)).get(HEARTBEAT_CHANNEL.encode(), 0))  # type: ignore[arg-type]


async def test_resync_rereads_only_what_pubsub_missed(redis_server: RedisServer) -> None:
    clock = FakeClock(wall=time.time())
    hub = RedisHub(RedisAccess(redis_server.url), SEED, resync_seconds=3600, queue_poll_seconds=0.05, clock=clock)
    try:
        await rereads_only_what_pubsub_missed(redis_server, hub, clock)
    finally:
        await hub.stop()


async def rereads_only_what_pubsub_missed(redis_server: RedisServer, hub: RedisHub, clock: FakeClock) -> None:
    r = redis.Redis.from_url(redis_server.url)
    rec = Recorder()
    for wid in ("w-a", "w-b", "w-c"):
        write(r, wid, publish=False)
    hub.subscribe(rec.subscriber())
    hub.start()
    # A new subscriber gets one full read: every worker, with its report.
    first = await async_wait_until(lambda: rec.resyncs and rec.resyncs[0], within=10, what="the first resync")
    assert first[0] == {"w-a", "w-b", "w-c"}
    assert set(first[1]) == {"w-a", "w-b", "w-c"}

    await async_wait_until(lambda: subscribed(r), within=10, what="the heartbeat subscription")
    write(r, "w-a", publish=True, busy=True)
    write(r, "w-b", publish=True)
    write(r, "w-c", publish=False, busy=True)  # its pub/sub message "lost"
    await async_wait_until(lambda: rec.heard() == {"w-a", "w-b"}, within=10, what="two heartbeats")

    await hub.resync()
    present, regs = rec.resyncs[-1]
    assert present == {"w-a", "w-b", "w-c"}
    assert set(regs) == {"w-c"}, "only the worker pub/sub did not deliver is re-read"
    assert regs["w-c"].busy_count == 1, "the re-read carries its latest report"

    # A worker whose key expired (or was deleted) is gone from `present`.
    r.delete("worker:w-c")
    await hub.resync()
    assert rec.resyncs[-1][0] == {"w-a", "w-b"}

    # The trust window, on the hub's clock: inside it nothing heard is re-read; past it, it is.
    clock.advance(TRUST * 0.9)
    await hub.resync()
    assert set(rec.resyncs[-1][1]) == set(), "re-read before its trust window had passed"
    clock.advance(TRUST * 0.2)
    await hub.resync()
    assert set(rec.resyncs[-1][1]) == {"w-a", "w-b"}, "heard too long ago: re-read again"


async def test_broken_subscription_is_followed_by_a_full_reread(redis_server: RedisServer, hub: RedisHub) -> None:
    r = redis.Redis.from_url(redis_server.url)
    rec = Recorder()
    hub.subscribe(rec.subscriber())
    hub.start()
    await async_wait_until(lambda: rec.resyncs, within=10, what="the first resync")
    await async_wait_until(lambda: subscribed(r), within=10, what="the heartbeat subscription")
    write(r, "w-a", publish=True)
    await async_wait_until(lambda: rec.heard() == {"w-a"}, within=10, what="a heartbeat")
    count = len(rec.resyncs)

    r.client_kill_filter(_type="pubsub")  # the subscription breaks; heartbeats sent meanwhile are lost
    write(r, "w-b", publish=False)
    # No timer would resync for an hour: the reconnect itself triggers a full re-read,
    # which reports w-a again (although heard lately) and finds w-b.
    full = await async_wait_until(
        lambda: next((s for s in rec.resyncs[count:] if set(s[1]) == {"w-a", "w-b"}), None),
        within=10,
        what="a full resync after the reconnect",
    )
    assert full[0] == {"w-a", "w-b"}


async def test_a_new_pool_rereads_its_own_workers_not_everyones(redis_server: RedisServer, hub: RedisHub) -> None:
    """At 1000 pools, each new pool used to re-read all 10,000 hashes."""
    r = redis.Redis.from_url(redis_server.url)
    first, second = Recorder(), Recorder(pool="other", prefix="o-")
    hub.subscribe(first.subscriber())
    hub.start()
    await async_wait_until(lambda: first.resyncs, within=10, what="the first resync")
    await async_wait_until(lambda: subscribed(r), within=10, what="the heartbeat subscription")
    write(r, "w-a", publish=True)
    write(r, "o-a", publish=True, pool="other")  # heard, but no pool listens for it yet
    await async_wait_until(lambda: first.heard() == {"w-a"}, within=10, what="a heartbeat")
    await async_wait_until(lambda: "o-a" in hub._heard, within=10, what="the other pool's heartbeat")
    count = len(first.resyncs)

    hub.subscribe(second.subscriber())  # its resync comes at once (the hub's timer is an hour)
    got = await async_wait_until(lambda: second.resyncs and second.resyncs[0], within=10, what="its resync")
    assert got[0] == {"o-a"} and set(got[1]) == {"o-a"}, "the new pool gets its worker's report at once"
    assert first.resyncs[count][0] == {"w-a"}
    assert first.resyncs[count][1] == {}, "the other pool's worker, heard lately, is not re-read"
