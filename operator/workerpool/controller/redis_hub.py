"""Where the operator talks to Redis (with worker_commands.py, the commands it sends).

One hub per distinct Redis URL and worker protocol, shared by every pool that
uses both (the protocol, `workerpool.protocols`, names the keys and parses them):
- one pub/sub subscription to the protocol's heartbeat channel, routed to pools;
- one pipelined call per tick reading the depth and oldest entry of every
  queue key in use (the seed's demand; queue growth reaches the pools within
  a tick, 250 ms by default, without one connection or timer per pool);
- a periodic resync from the workers' keys that repairs what pub/sub lost;
- its WorkerCommands (worker_commands.py): retiring a worker, and recycle
  commands published with a dedupe record in one Lua script, so a request is
  published exactly once even across restarts.
The URL may carry a password: it is never logged; logs name the hub by a hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..contracts.report import WorkerReport
from ..contracts.wire import QueueStatus, WireFormatError
from ..decide.pods import redact
from ..protocols import Heartbeat, Offline, WorkerProtocol
from . import metrics
from .worker_commands import WorkerCommands

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
# A resync hands its findings to this many pools, then lets the event loop run
# (at 1000 pools, one go stalled every pool's round; docs/performance.md).
RESYNC_BATCH = 100
# The hub's loops, in the order their errors are reported: one error per loop,
# each cleared only by its own loop's next success, so an outage reads as one
# stable message (not whichever loop failed last) and recovers when all do.
# The queue loop's error is the demand's (`queue_error`); the others say the
# workers' reports cannot be trusted (`error`).
LOOPS = ("queues", "heartbeats", "resync")
WORKER_LOOPS = ("heartbeats", "resync")


class PoolListener(Protocol):
    """What a hub tells a pool (a pool controller's PoolState). Called on the event loop; never blocks."""

    def on_heartbeat(self, report: WorkerReport) -> None: ...
    def on_offline(self, worker_id: str) -> None: ...  # the worker said it stopped
    def on_queue(self, status: QueueStatus) -> None: ...  # the pool's queue depth moved
    def on_resync(self, present: set[str], regs: dict[str, WorkerReport]) -> None: ...  # ids, re-read reports
    def on_health(self) -> None: ...  # the hub's error changed
    def owns(self, worker_id: str) -> bool: ...  # is this worker id one of the pool's pods?


@dataclass
class Subscriber:
    """A pool listening to a hub."""

    namespace: str
    name: str
    queue_key: str | None  # the seed's queue sorted set; None: the pool's demand is read elsewhere
    trust_seconds: float  # a heartbeat heard this recently is not re-read from the hash by a resync
    listener: PoolListener


@dataclass
class LoopHealth:
    """Each loop's last error, cleared only by that loop's next success."""

    errors: dict[str, str] = field(default_factory=dict)

    def record(self, loop: str, error: str | None) -> str | None:
        """Record one loop's outcome; the hub's error: the first failing loop's, in LOOPS order."""
        if error is None:
            self.errors.pop(loop, None)
        else:
            self.errors[loop] = error
        return self.first(LOOPS)

    def first(self, loops: Iterable[str]) -> str | None:
        return next((self.errors[name] for name in loops if name in self.errors), None)


def redis_client(url: str) -> aioredis.Redis:
    """A client that fails fast (a hung Redis must not hang a pool's round or an eviction's answer)."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15)


def describe_error(exc: BaseException, url: str) -> str:
    """An error's text for conditions and logs, with the hub's URL redacted should it appear."""
    return f"{type(exc).__name__}: {exc}".replace(url, redact(url))[:200]


def route(
    subscribers: dict[tuple[str, str], Subscriber], worker_id: str, pool: str | None, namespace: str | None
) -> list[Subscriber]:
    """The pools a worker's report goes to: the one it names, if that pool owns its pod."""
    if pool is not None and namespace is not None:
        sub = subscribers.get((namespace, pool))
        return [sub] if sub is not None and sub.listener.owns(worker_id) else []
    # A worker that does not say which pool it is in: its pod name decides.
    return [s for s in subscribers.values() if s.listener.owns(worker_id)]


@dataclass
class RedisHub:
    url: str
    protocol: WorkerProtocol
    resync_seconds: float
    queue_poll_seconds: float
    subscribers: dict[tuple[str, str], Subscriber] = field(default_factory=dict)
    error: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:8]
        self.label = f"redis-{digest}" + ("" if self.protocol.name == "seed" else f"-{self.protocol.name}")
        self.client = redis_client(self.url)
        self.commands = WorkerCommands(self.client, self.protocol)
        self._queues: dict[str, QueueStatus] = {}  # empty until the first reading
        self._resync_now = asyncio.Event()
        # worker id -> (when its last heartbeat arrived by pub/sub, its pool, its namespace)
        self._heard: Heard = {}
        self._full_next = True
        self._new_pools: set[tuple[str, str]] = set()  # subscribed since the last resync
        self._loops = LoopHealth()

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._heartbeats(), name=f"{self.label}-heartbeats"),
            asyncio.create_task(self._poll_queues(), name=f"{self.label}-queues"),
            asyncio.create_task(self._resync_loop(), name=f"{self.label}-resync"),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    def subscribe(self, sub: Subscriber) -> None:
        if (sub.namespace, sub.name) not in self.subscribers:
            # A new pool learns its workers at once (not after a period), and fully:
            # the next resync re-reads its workers (not all: at 1000 pools that was 10,000 hashes).
            self._new_pools.add((sub.namespace, sub.name))
            self._resync_now.set()
        self.subscribers[(sub.namespace, sub.name)] = sub

    def unsubscribe(self, namespace: str, name: str) -> None:
        self.subscribers.pop((namespace, name), None)

    def _loop_health(self, loop: str, error: str | None) -> None:
        self._health(self._loops.record(loop, error))

    @property
    def worker_error(self) -> str | None:
        """Why the workers' reports cannot be trusted now (None: they can)."""
        return self._loops.first(WORKER_LOOPS)

    @property
    def queue_error(self) -> str | None:
        """Why the queue sorted sets could not be read (None: the last reading is current)."""
        return self._loops.first(("queues",))

    def _health(self, error: str | None) -> None:
        if error != self.error:
            if error:
                log.warning("%s unavailable: %s", self.label, error)
            else:
                log.info("%s reachable", self.label)
            self.error = error
            metrics.REDIS_UP.labels(hub=self.label).set(0 if error else 1)
            for sub in list(self.subscribers.values()):
                sub.listener.on_health()

    # --- heartbeats ---------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        reconnect = False
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.protocol.heartbeat_channel)
                if reconnect:
                    # Heartbeats published while unsubscribed are lost: re-read every worker now.
                    self._full_next = True
                    self._resync_now.set()
                reconnect = True
                self._loop_health("heartbeats", None)
                async for message in pubsub.listen():
                    self.handle_message(message.get("data"))
            except (RedisError, OSError) as exc:
                self._loop_health("heartbeats", f"heartbeat subscription failed: {type(exc).__name__}")
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisError, RuntimeError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def handle_message(self, raw: object) -> None:
        """A message on the heartbeat channel: a heartbeat, a worker going offline, or ignored."""
        if not isinstance(raw, bytes | str):
            return
        try:
            heard = self.protocol.parse_message(raw)
        except WireFormatError as exc:
            metrics.MALFORMED.labels(kind="heartbeat").inc()
            log.warning("%s: skipping malformed heartbeat: %s", self.label, exc)
            return
        if isinstance(heard, Heartbeat):
            report = heard.report
            self._heard[report.worker_id] = (time.monotonic(), report.pool, report.namespace)
            for sub in route(self.subscribers, report.worker_id, report.pool, report.namespace):
                sub.listener.on_heartbeat(report)
        elif isinstance(heard, Offline):
            self._heard.pop(heard.worker_id, None)
            for sub in route(self.subscribers, heard.worker_id, None, None):
                sub.listener.on_offline(heard.worker_id)
        # Ignored: other event types share the channel (Bifrost's pool_scaling, ...): no log line each.

    # --- queues --------------------------------------------------------------------------------

    async def _poll_queues(self) -> None:
        while True:
            keys = sorted({s.queue_key for s in self.subscribers.values() if s.queue_key is not None})
            if keys:
                try:
                    async with self.client.pipeline(transaction=False) as p:
                        for key in keys:
                            p.zcard(key)
                            p.zrange(key, 0, 0, withscores=True)
                        replies = await p.execute()
                except (RedisError, OSError) as exc:
                    self._loop_health("queues", describe_error(exc, self.url))
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                now = time.time()
                self._loop_health("queues", None)
                for i, key in enumerate(keys):
                    depth, oldest = int(replies[2 * i]), replies[2 * i + 1]
                    age = max(0.0, now - float(oldest[0][1])) if oldest else 0.0
                    status = QueueStatus(depth=depth, oldest_age_seconds=round(age, 1))
                    previous = self._queues.get(key)
                    self._queues[key] = status
                    for sub in list(self.subscribers.values()):
                        if sub.queue_key == key and (previous is None or previous.depth != status.depth):
                            sub.listener.on_queue(status)
            await asyncio.sleep(self.queue_poll_seconds)

    def queue(self, key: str) -> QueueStatus | None:
        """The last queue reading, None while the queue cannot be read."""
        return None if self.queue_error is not None else self._queues.get(key)

    # --- resync ----------------------------------------------------------------------------------

    async def _resync_loop(self) -> None:
        while True:
            try:
                await self.resync()
            except (RedisError, OSError) as exc:
                self._loop_health("resync", f"resync failed: {type(exc).__name__}")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self._loop_health("resync", None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_now.wait(), timeout=self.resync_seconds)
            self._resync_now.clear()

    async def resync(self) -> None:
        """Repair what pub/sub lost: which workers exist, and the reports of those not heard lately.

        A worker whose heartbeat arrived by pub/sub within its pool's trust window
        is only confirmed present (its hash is not read again): in a healthy system
        the resync costs one SCAN, and the full reads go to the workers pub/sub missed.
        """
        self._resync_now.clear()
        proto = self.protocol
        keys = [k async for k in self.client.scan_iter(match=proto.registration_match, count=1000)]
        found = (proto.worker_id_from_key(k.decode() if isinstance(k, bytes) else k) for k in keys)
        ids = list(dict.fromkeys(i for i in found if i))  # a worker may have several keys (Bifrost's)
        full, self._full_next = self._full_next, False
        new, self._new_pools = self._new_pools, set()
        now = time.monotonic()
        stale = ids
        if not full:
            subs, heard, default = self.subscribers, self._heard, self.resync_seconds
            stale = [i for i in ids if not heard_lately(heard, subs, i, now, default) or heard_for(heard, i, new)]
        regs = await read_reports(self.client, proto, self.label, stale)
        present, grouped = group_by_pool(self.subscribers, ids, set(stale), regs, self._heard)
        known = set(ids)
        self._heard = {i: h for i, h in self._heard.items() if i in known}
        for n, (key, pool_regs) in enumerate(grouped.items(), start=1):
            listening = self.subscribers.get(key)
            if listening is not None:
                listening.listener.on_resync(present[key], pool_regs)
            if n % RESYNC_BATCH == 0:
                await asyncio.sleep(0)  # let heartbeats, watches and rounds run between batches


Heard = dict[str, tuple[float, str | None, str | None]]  # worker id -> (when, its pool, its namespace)


def heard_for(heard: Heard, worker_id: str, pools: set[tuple[str, str]]) -> bool:
    """Whether the worker's last heartbeat may belong to one of `pools` (unlabelled: it may)."""
    if not pools:
        return False
    _, pool, namespace = heard[worker_id]
    return pool is None or namespace is None or (namespace, pool) in pools


def heard_lately(
    heard: Heard, subscribers: dict[tuple[str, str], Subscriber], worker_id: str, now: float, default: float
) -> bool:
    """Heard by pub/sub within its pool's trust window (`default` for a worker of no known pool)."""
    last = heard.get(worker_id)
    if last is None:
        return False
    at, pool, namespace = last
    sub = subscribers.get((namespace, pool)) if pool is not None and namespace is not None else None
    return now - at < (sub.trust_seconds if sub is not None else default)


async def read_reports(
    client: aioredis.Redis, protocol: WorkerProtocol, label: str, ids: list[str]
) -> dict[str, WorkerReport]:
    """The workers' reports, read in one pipelined round trip (the protocol names the reads)."""
    if not ids:
        return {}
    reads = [protocol.worker_reads(worker_id) for worker_id in ids]
    async with client.pipeline(transaction=False) as p:
        for per_worker in reads:
            for command, key in per_worker:
                getattr(p, command)(key)
        replies = await p.execute()
    return parse_reports(label, protocol, ids, [len(r) for r in reads], replies)


def parse_reports(
    label: str, protocol: WorkerProtocol, ids: list[str], counts: list[int], replies: list[object]
) -> dict[str, WorkerReport]:
    """The reports a resync read (`counts[i]` replies for `ids[i]`); expired and malformed ones skipped (counted)."""
    regs: dict[str, WorkerReport] = {}
    at = 0
    for worker_id, count in zip(ids, counts, strict=True):
        mine, at = replies[at : at + count], at + count
        try:
            report = protocol.parse_reads(worker_id, mine)
        except WireFormatError as exc:
            metrics.MALFORMED.labels(kind="registration").inc()
            log.warning("%s: skipping malformed registration: %s", label, exc)
            continue
        if report is not None:  # None: expired between SCAN and the read
            regs[worker_id] = report
    return regs


def group_by_pool(
    subscribers: dict[tuple[str, str], Subscriber],
    ids: list[str],
    read: set[str],
    regs: dict[str, WorkerReport],
    heard: Heard,
) -> tuple[dict[tuple[str, str], set[str]], dict[tuple[str, str], dict[str, WorkerReport]]]:
    """Per pool: the workers present (the ones not `read`, by their last heartbeat; the read
    ones, by their registration) and the registrations read."""
    present: dict[tuple[str, str], set[str]] = {k: set() for k in subscribers}
    grouped: dict[tuple[str, str], dict[str, WorkerReport]] = {k: {} for k in subscribers}
    for worker_id in ids:
        if worker_id not in read:
            _, pool, namespace = heard[worker_id]
            for sub in route(subscribers, worker_id, pool, namespace):
                present[(sub.namespace, sub.name)].add(worker_id)
    for worker_id, reg in regs.items():
        for sub in route(subscribers, worker_id, reg.pool, reg.namespace):
            grouped[(sub.namespace, sub.name)][worker_id] = reg
            present[(sub.namespace, sub.name)].add(worker_id)
    return present, grouped
