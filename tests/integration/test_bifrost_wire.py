"""Bifrost's wire against real servers: the test bed's Bifrost-wire worker checked
against the recorded samples (keys, channel, field names, JSON types), and the
operator's side of it: the Redis hub under `protocol: bifrost`, and the RabbitMQ
broker that reads the demand (passively), both on a real redis-server and a real
rabbitmq-server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis
from aiormq.exceptions import ChannelNotFoundEntity
from prometheus_client import REGISTRY

from devcluster.bifrost_wire import BifrostWireProcess, Ledger, execution, publish_executions, ready_messages
from devcluster.bifrost_worker import POISON
from devcluster.rabbitmq_server import RabbitMQServer, RabbitMQVhost
from devcluster.redis_server import RedisServer
from devcluster.waiting import async_wait_until, wait_until
from workerpool.contracts.report import WorkerReport
from workerpool.contracts.wire import QueueStatus
from workerpool.controller.adapters.rabbitmq import RabbitBroker, _queue_count
from workerpool.controller.adapters.redis_hub import RedisHub
from workerpool.controller.ports import Subscriber
from workerpool.decide.reasons import Reason
from workerpool.protocols import BIFROST, Heartbeat, Offline
from workerpool.protocols.bifrost import EVENTS_CHANNEL
from workerpool.redis_connect import RedisAccess

pytestmark = pytest.mark.redis

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "bifrost"
START = 30.0
BEAT = 10.0


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def shape(value: Any) -> Any:
    """Field names and JSON types, recursively (a list by its first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


class Channel:
    """Everything published on Bifrost's events channel, as the operator's subscription sees it."""

    def __init__(self, url: str) -> None:
        self.pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(EVENTS_CHANNEL)
        self.seen: list[dict[str, Any]] = []

    def next(self, what: str, match: Any, timeout: float = BEAT) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            while (message := self.pubsub.get_message(timeout=0.05)) is not None:
                self.seen.append(json.loads(message["data"]))
            return next((m for m in self.seen if match(m)), None)

        return wait_until(found, timeout=timeout, what=what)


@pytest.fixture
def worker(redis_server: RedisServer, rabbitmq_server: RabbitMQVhost, tmp_path: Path) -> Iterator[BifrostWireProcess]:
    w = BifrostWireProcess(redis_server.url, rabbitmq_server.local_url, tmp_path)
    yield w
    w.stop()


def test_the_test_beds_worker_speaks_the_recorded_wire(
    redis_server: RedisServer, rabbitmq_server: RabbitMQVhost, worker: BifrostWireProcess
) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    channel = Channel(redis_server.url)
    worker.start()
    key = f"bifrost:pool:{worker.worker_id}"
    registration = wait_until(lambda: r.hgetall(key), timeout=START, what="the registration hash")
    assert set(registration) == set(sample("registration.json"))
    assert shape(json.loads(registration["packages"])) == shape(json.loads(sample("registration.json")["packages"]))
    assert 0 < r.ttl(key) <= 30  # type: ignore[operator]

    idle = channel.next("an idle heartbeat", lambda m: m["type"] == "worker_heartbeat")
    assert shape(idle) == shape(sample("heartbeat-idle.json"))
    assert shape(json.loads(r.get(f"{key}:heartbeat"))) == shape(sample("heartbeat-idle.json"))  # type: ignore[arg-type]
    assert 0 < r.ttl(f"{key}:heartbeat") <= 60  # type: ignore[operator]
    assert any(m["type"] == "pool_progress" for m in channel.seen), "other event types share the channel"

    running = [execution(60), execution(60)]
    publish_executions(rabbitmq_server.local_url, running)
    busy = channel.next("a heartbeat of two executions", lambda m: m.get("busy_count") == 2)
    assert shape(busy) == shape(sample("heartbeat-busy.json"))
    assert {p["execution"]["execution_id"] for p in busy["processes"]} == {e["execution_id"] for e in running}
    for message in (idle, busy):  # and the operator's parser reads each as Bifrost's own
        assert isinstance(BIFROST.parse_message(json.dumps(message)), Heartbeat)

    worker.terminate()
    offline = channel.next("worker_offline", lambda m: m["type"] == "worker_offline", timeout=START)
    assert shape(offline) == shape(sample("worker-offline.json"))
    assert BIFROST.parse_message(json.dumps(offline)) == Offline(worker.worker_id)
    assert worker.proc is not None and worker.proc.wait(20) == 0
    assert not r.exists(key) and r.exists(f"{key}:heartbeat"), "registration deleted, snapshot left to expire"
    # Stopped 'mid-execution', like Bifrost's worker: both executions are lost, nothing is requeued.
    assert Ledger(redis_server.url).results() == []
    assert ready_messages(rabbitmq_server.local_url) == 0


def test_the_worker_honours_both_recycle_actions_and_ignores_the_seeds(
    redis_server: RedisServer, worker: BifrostWireProcess
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    worker.start()
    commands = f"bifrost:pool:{worker.worker_id}:commands"
    wait_until(lambda: dict(r.pubsub_numsub(commands)).get(commands.encode()), timeout=START, what="its subscription")
    for message in (
        {"type": "recycle", "pid": None},
        {"action": "recycle_all", "reason": "*"},
        {"action": "recycle_process", "pid": 1, "reason": "w:1"},
    ):
        r.publish(commands, json.dumps(message))
    ledger = Ledger(redis_server.url)
    got = wait_until(lambda: len(ledger.commands()) == 3 and ledger.commands(), timeout=BEAT, what="3 commands")
    assert [c["handled"] for c in got] == [False, True, True]


def test_a_delivery_waits_unacknowledged_for_a_slot_then_is_dead_lettered(
    redis_server: RedisServer, rabbitmq_server: RabbitMQVhost, tmp_path: Path
) -> None:
    """Bifrost's slot pool: with every slot busy, a delivery waits (neither ready in the queue
    nor busy in a heartbeat) for the slot wait, then fails and goes to the poison queue."""
    url = rabbitmq_server.local_url
    w = BifrostWireProcess(
        redis_server.url, url, tmp_path, BIFROST_MAX_WORKERS=1, BIFROST_MAX_CONCURRENCY=3,
        BIFROSTWIRE_SLOTS=1, BIFROSTWIRE_SLOT_WAIT_SECONDS=2,
    ).start()  # fmt: skip
    try:
        ledger = Ledger(redis_server.url)
        wait_until(lambda: redis.Redis.from_url(redis_server.url).exists(f"bifrost:pool:{w.worker_id}"),
                   timeout=START, what="the registration")  # fmt: skip
        long, waiting = execution(30), execution(1)
        published_at = time.time()
        publish_executions(url, [long, waiting])
        wait_until(lambda: len(ledger.deliveries()) == 2, timeout=BEAT, what="both delivered")
        assert ready_messages(url) == 0  # held by the worker: not ready
        failed = wait_until(lambda: ledger.results(), timeout=BEAT + 5, what="the slot wait to end")
        no_slot = "No worker slot available after timeout"
        expected = {"execution_id": waiting["execution_id"], "worker_id": w.worker_id, "success": False}
        assert [{k: v for k, v in r.items() if k != "at"} for r in failed] == [
            {**expected, "error_type": "RuntimeError", "error": no_slot}
        ]
        assert failed[0]["at"] > published_at  # when it was recorded: the benchmarks' producer-to-result latency
        assert wait_until(lambda: ready_messages(url, POISON) == 1, timeout=BEAT, what="the dead letter")
    finally:
        w.stop()


def test_a_draining_worker_finishes_what_runs_and_fails_what_outlives_the_deadline(
    redis_server: RedisServer, rabbitmq_server: RabbitMQVhost, tmp_path: Path
) -> None:
    """The newer worker's SIGTERM: a short execution ends with its result, one past the drain
    deadline is recorded failed (WorkerShutdown), a delivery waiting for a slot goes back to the queue."""
    url = rabbitmq_server.local_url
    w = BifrostWireProcess(
        redis_server.url, url, tmp_path, BIFROST_MAX_WORKERS=2, BIFROST_MAX_CONCURRENCY=3,
        BIFROSTWIRE_SLOTS=1, BIFROSTWIRE_DRAIN=1, BIFROST_DRAIN_DEADLINE_SECONDS=10,
    ).start()  # fmt: skip
    try:
        ledger = Ledger(redis_server.url)
        wait_until(lambda: redis.Redis.from_url(redis_server.url).exists(f"bifrost:pool:{w.worker_id}"),
                   timeout=START, what="the registration")  # fmt: skip
        # The short one still runs at the SIGTERM (it comes as soon as all three are delivered), and
        # ends well within the deadline; the long one outlives it.
        short, long, waiting = execution(6), execution(60), execution(1)
        publish_executions(url, [short, long, waiting])
        wait_until(lambda: len(ledger.deliveries()) == 3, timeout=BEAT, what="all three delivered")
        w.terminate()
        assert w.proc is not None and w.proc.wait(30) == 0
        results = {r["execution_id"]: (r["success"], r["error_type"]) for r in ledger.results()}
        assert results == {short["execution_id"]: (True, None), long["execution_id"]: (False, "WorkerShutdown")}
        assert ready_messages(url) == 1  # the one that never ran is the queue's again
    finally:
        w.stop()


@dataclass
class Recorder:
    owned: set[str]
    reports: list[WorkerReport] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    resyncs: list[dict[str, WorkerReport]] = field(default_factory=list)

    def on_heartbeat(self, report: WorkerReport) -> None:
        self.reports.append(report)

    def on_offline(self, worker_id: str) -> None:
        self.offline.append(worker_id)

    def on_queue(self, status: QueueStatus) -> None:
        pass

    def on_resync(self, present: set[str], regs: dict[str, WorkerReport]) -> None:
        self.resyncs.append(dict(regs))

    def on_health(self) -> None:
        pass

    def owns(self, worker_id: str) -> bool:
        return worker_id in self.owned


async def test_a_bifrost_hub_routes_by_pod_name_resyncs_from_snapshots_and_drops_an_offline_worker(
    redis_server: RedisServer, worker: BifrostWireProcess
) -> None:
    ours, theirs = Recorder({worker.worker_id}), Recorder({"someone-else"})
    hub = RedisHub(RedisAccess(redis_server.url), BIFROST, resync_seconds=0.2, queue_poll_seconds=0.05)
    hub.subscribe(Subscriber("ns", "ours", None, 5.0, ours))
    hub.subscribe(Subscriber("ns", "theirs", None, 5.0, theirs))
    hub.start()
    try:
        await asyncio.to_thread(worker.start)
        await async_wait_until(lambda: ours.reports, within=START, what="a heartbeat routed to its pool")

        # A resync between its registration and its first snapshot reads a worker of unknown state:
        # the one after the snapshot is written reads it whole.
        def read_whole() -> WorkerReport | None:
            reports = [regs[worker.worker_id] for regs in ours.resyncs if worker.worker_id in regs]
            return next((r for r in reports if r.complete), None)

        report = await async_wait_until(read_whole, within=BEAT, what="a resync from its keys")
        assert report.runs_nothing
        await asyncio.to_thread(worker.terminate)
        await async_wait_until(lambda: ours.offline == [worker.worker_id], within=START, what="worker_offline")
        assert not theirs.reports and not theirs.offline and not any(theirs.resyncs[-1:])
        assert hub.queue_error is None and hub.worker_fault is None
    finally:
        await hub.stop()


async def test_the_broker_reads_ready_messages_passively_and_says_when_it_cannot(
    rabbitmq_own: RabbitMQServer,
) -> None:
    rabbitmq_server = rabbitmq_own  # stopped and started here: a broker of its own
    url = rabbitmq_server.local_url
    await asyncio.to_thread(publish_executions, url, [execution(1) for _ in range(3)])
    broker = RabbitBroker(url, poll_seconds=0.05)
    listener = Recorder(set())
    broker.subscribe("ns", "p", ("workflow-executions",), listener)
    broker.subscribe("ns", "q", ("no-such-queue",), listener)
    broker.start()
    try:
        depth = await async_wait_until(
            lambda: (broker.reading(("workflow-executions",))[0] or QueueStatus()).depth, within=BEAT, what="3 ready"
        )
        assert depth == 3
        queue, stall = broker.reading(("no-such-queue",))
        assert queue is None and stall is not None and stall.reason == Reason.RABBITMQ_QUEUE_UNAVAILABLE
        assert "no-such-queue" in stall.message
        with pytest.raises(ChannelNotFoundEntity):  # read, never declared
            await asyncio.to_thread(ready_messages, url, "no-such-queue")

        await asyncio.to_thread(rabbitmq_server.stop_broker)
        await async_wait_until(lambda: broker.error, within=BEAT, what="the broker's outage")
        queue, stall = broker.reading(("workflow-executions",))
        assert queue is None and stall is not None and stall.reason == Reason.RABBITMQ_UNAVAILABLE
        assert "guest" not in stall.message and url not in stall.message  # no credentials, no URL

        await asyncio.to_thread(rabbitmq_server.start)
        depth = await async_wait_until(
            lambda: (broker.reading(("workflow-executions",))[0] or QueueStatus()).depth,
            within=START,
            what="the reading after the broker came back",
        )
        assert depth == 3  # persistent messages on a durable queue survived the restart
    finally:
        await broker.stop()


async def test_a_crash_in_the_broker_poll_is_shown_and_the_poll_comes_back(rabbitmq_server: RabbitMQVhost) -> None:
    """Something unexpected escapes the poll (here a listener's bug on the first notification):
    the supervisor restarts it, the pools read why meanwhile, then the readings resume."""
    url = rabbitmq_server.local_url
    await asyncio.to_thread(publish_executions, url, [execution(1) for _ in range(2)])
    broker = RabbitBroker(url, poll_seconds=0.05)
    listener = Recorder(set())
    stalls: list[str] = []
    armed = [True]

    def on_health() -> None:
        if armed and not broker.error:
            armed.clear()
            raise KeyError("a listener's bug")
        stalls.append(broker.error or "")

    listener.on_health = on_health  # type: ignore[method-assign]
    before = REGISTRY.get_sample_value("workerpool_loop_crashes_total", {"loop": "broker-poll"}) or 0.0
    broker.subscribe("ns", "p", ("workflow-executions",), listener)
    broker.start()
    try:
        depth = await async_wait_until(
            lambda: (broker.reading(("workflow-executions",))[0] or QueueStatus()).depth, within=START, what="2 ready"
        )
        assert depth == 2
        assert REGISTRY.get_sample_value("workerpool_loop_crashes_total", {"loop": "broker-poll"}) == before + 1
        assert any("poll loop for this broker crashed (KeyError)" in s for s in stalls), stalls
        assert broker.error is None
    finally:
        await broker.stop()


async def test_with_the_management_api_the_broker_counts_deliveries_a_worker_holds(
    rabbitmq_server: RabbitMQVhost,
) -> None:
    """Three messages, two of them delivered to a consumer that has not acknowledged them (as
    Bifrost's worker holds one while it waits for a free process): the queue's ready count says
    1, the demand is 3; without the management API it would be 1."""
    url = rabbitmq_server.local_url
    await asyncio.to_thread(publish_executions, url, [execution(1) for _ in range(3)])
    holder = await aio_pika.connect(url)
    channel = await holder.channel()
    await channel.set_qos(prefetch_count=2)
    held: list[Any] = []
    queue = await channel.declare_queue("workflow-executions", passive=True)
    await queue.consume(held.append)  # never acknowledged
    counted = RabbitBroker(url, poll_seconds=0.05, management=rabbitmq_server.management_url)
    ready_only = RabbitBroker(url, poll_seconds=0.05)
    for broker in (counted, ready_only):
        broker.subscribe("ns", "p", ("workflow-executions",), Recorder(set()))
        broker.start()
    try:
        await async_wait_until(lambda: len(held) == 2, within=BEAT, what="two deliveries held")
        depth = lambda b: (b.reading(("workflow-executions",))[0] or QueueStatus()).depth  # noqa: E731
        await async_wait_until(lambda: depth(counted) == 3, within=BEAT, what="ready + unacknowledged")
        assert depth(ready_only) == 1
        await holder.close()  # the held ones go back to the queue: ready again, and still 3
        await async_wait_until(lambda: depth(ready_only) == 3, within=BEAT, what="requeued")
        assert depth(counted) == 3
    finally:
        for broker in (counted, ready_only):
            await broker.stop()


def test_a_management_reply_is_bounded_and_never_raises() -> None:
    assert _queue_count(200, b'{"messages_ready": 2, "messages_unacknowledged": 7}') == 9
    assert _queue_count(200, b"{}") == 0
    assert _queue_count(401, b"") == "HTTP 401"
    assert _queue_count(200, b"[1]") == "not a JSON object"
    key = b'{"messages_unacknowledged": '
    for bad in (b"-1", b"1e400", b"true", b"18446744073709551616", b'"3"'):
        assert _queue_count(200, key + bad + b"}") == "a message count that is not one"
    assert _queue_count(200, b" " * (2 * 1024 * 1024)) == "reply too large"
