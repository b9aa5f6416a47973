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

After an outage (a failover, a restart) the hub's reports are not trusted again
until a full resync has re-read every worker: the pools see the outage's fault
until then, so no scale-down is decided on what the outage left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ...contracts.report import WorkerReport
from ...contracts.wire import MAX_MESSAGE_BYTES, QueueStatus
from ...protocols import Heartbeat, Offline, WorkerProtocol
from ...redis_connect import Identity, Problem, RedisAccess, classify, describe, diagnose, redis_client
from ..ports import Fault, Subscriber
from ..process import metrics
from ..process.clock import SYSTEM_CLOCK, Clock
from ..process.lograte import RateLimitedLog
from ..process.tasks import Crashed, cancel_and_wait, supervise
from .hub_routing import SharedPodNames, Subscriptions, route
from .redis_reads import QueueReadings, Refusals, parse_channel_message, read_queues, read_reports
from .worker_commands import WorkerCommands

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
MAX_POD_NAME = 253
# Heard workers remembered between resyncs (each pruned by the next resync's SCAN): a pod
# name and two names of 63 characters at most (a longer one names no pool: kept as ""),
# about 600 bytes each, so 20,000 stay within 12 MB however many workers a Redis has.
MAX_HEARD = 20_000
MAX_NAME = 63
# After a reconnect the full resync starts this much later, so the workers' own
# reconnects (they retry every 0.5 s) and heartbeats land first: the resync then
# reads what they report now, not what the outage left in Redis.
SETTLE_SECONDS = 1.0
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


@dataclass
class LoopHealth:
    """Each loop's last fault, cleared only by that loop's next success; the hub's fault (the
    first failing loop's, in LOOPS order) logged, exported and told to the pools when it changes."""

    label: str = "redis"
    sentinel: bool = False  # the URL names Sentinels: a lost primary reads as a failover
    on_change: Callable[[], None] = lambda: None
    errors: dict[str, Fault] = field(default_factory=dict)
    fault: Fault | None = None

    def record(self, loop: str, fault: Fault | None) -> Fault | None:
        """Record one loop's outcome; the hub's fault after it."""
        if fault is None:
            self.errors.pop(loop, None)
        else:
            self.errors[loop] = fault
        now = self.first(LOOPS)
        if now != self.fault:
            if now:
                log.warning("%s unavailable: %s", self.label, now.message)
            else:
                log.info("%s reachable", self.label)
            self.fault = now
            metrics.REDIS_UP.labels(hub=self.label).set(0 if now else 1)
            self.on_change()
        return now

    def first(self, loops: Iterable[str]) -> Fault | None:
        return next((self.errors[name] for name in loops if name in self.errors), None)

    def awaiting_resync(self) -> None:
        """Reconnected: the resync loop's fault (of the outage's kind) until a full resync clears it."""
        outage = self.errors.get("heartbeats")
        waiting = "reconnected to Redis: re-reading every worker before trusting them"
        self.record("resync", Fault(outage.problem if outage else Problem.UNAVAILABLE, waiting))

    def fault_of(self, exc: BaseException, what: str, access: RedisAccess) -> Fault:
        """The fault an error means (`what`: the loop's doing), its message free of secrets."""
        problem = classify(exc, self.sentinel)
        if problem is Problem.FAILOVER:
            return Fault(problem, f"{what}: the Redis primary is unreachable or being replaced (Sentinel failover?)")
        return Fault(problem, f"{what}: {describe(exc, access)}")


def operator_client(access: RedisAccess, identity: Identity | None = None) -> aioredis.Redis:
    """A client that fails fast (a hung Redis must not hang a pool's round or an eviction's answer)."""
    return redis_client(
        access,
        name="workerpool-operator",
        identity=identity,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
    )


@dataclass
class ResyncGate:
    """Which resync is full, and which one may clear a reconnect's fault: a full one that started
    SETTLE_SECONDS or more after the reconnect."""

    full_next: bool = True  # the first resync reads every worker
    trust_after: float = 0.0  # (monotonic)

    def reconnected(self, now: float) -> None:
        self.full_next, self.trust_after = True, now + SETTLE_SECONDS

    def take(self, now: float) -> bool:
        """Starting a resync now: whether it is full (one too early after a reconnect owes another)."""
        full, self.full_next = self.full_next, now < self.trust_after
        return full

    def failed(self, full: bool) -> None:
        self.full_next = self.full_next or full  # a failed full resync is still owed

    def trusts(self, started: float) -> bool:
        """A resync that started then and succeeded: may it clear the fault?"""
        return started >= self.trust_after and not self.full_next


@dataclass
class RedisHub:
    access: RedisAccess
    protocol: WorkerProtocol
    resync_seconds: float
    queue_poll_seconds: float
    identity: Identity | None = None  # the operator's own Redis user (None: the URL's)
    clock: Clock = SYSTEM_CLOCK  # when heartbeats were heard, and the queues' ages
    max_message_bytes: int = MAX_MESSAGE_BYTES  # a heartbeat or a registration over it is refused unparsed
    pod_names: SharedPodNames | None = None  # the replica's index of pools told apart by pod name alone
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.label = self.access.label + ("" if self.protocol.name == "seed" else f"-{self.protocol.name}")
        self.sentinel = self.access.target.sentinel
        self.client = operator_client(self.access, self.identity)
        self.commands = WorkerCommands(self.client, self.protocol, durable=self.access.has_replicas)
        self._queues = QueueReadings({}, {})  # empty until the first reading
        self._refusals = Refusals(self.label, RateLimitedLog(log, clock=self.clock))
        self._resync_now = asyncio.Event()
        by_name = self.pod_names if not self.protocol.reports_name_their_pool else None
        self._subs = Subscriptions(self.access.target.server, by_name, self._resync_now.set)
        # worker id -> (when its last heartbeat arrived by pub/sub, its pool, its namespace). A
        # worker no pool owns yet (another shard's, a pool not subscribed yet) is remembered too,
        # so a resync does not re-read it, but only up to MAX_HEARD: beyond, only owned ones.
        self._heard: Heard = {}
        self._gate = ResyncGate()
        self._loops = LoopHealth(self.label, self.sentinel, self._tell_pools)

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        loops = {"heartbeats": self._heartbeats, "queues": self._poll_queues, "resync": self._resync_loop}
        self.tasks = [supervise(f"{self.label}-{n}", f"hub-{n}", body, self._crashed(n)) for n, body in loops.items()]

    def _crashed(self, loop: str) -> Crashed:
        """A crash of `loop` is its fault (Stalled, LoopRestarting) until its next success; after the
        heartbeat loop's, as after a reconnect, nothing is trusted until a full resync."""

        def crashed(exc: BaseException) -> None:
            what = f"the operator's {loop} loop for this Redis crashed ({type(exc).__name__}); restarting it"
            self._loops.record(loop, Fault(Problem.INTERNAL, what))
            if loop == "heartbeats":
                self._await_full_resync()

        return crashed

    async def stop(self) -> None:
        await cancel_and_wait(self.tasks)
        await self.client.aclose()

    @property
    def subscribers(self) -> dict[tuple[str, str], Subscriber]:
        return self._subs.by_key

    def subscribe(self, sub: Subscriber) -> None:
        self._subs.add(sub)

    def unsubscribe(self, namespace: str, name: str) -> None:
        self._subs.remove(namespace, name)

    def names_shared_with(self, namespace: str, name: str) -> tuple[tuple[str, str], ...]:
        return self._subs.shared_with(namespace, name)

    async def _failed(self, loop: str, exc: BaseException, what: str) -> None:
        self._loops.record(loop, self._loops.fault_of(await diagnose(self.client, exc), what, self.access))

    def _tell_pools(self) -> None:
        for sub in list(self.subscribers.values()):
            sub.listener.on_health()

    @property
    def fault(self) -> Fault | None:
        return self._loops.fault

    @property
    def worker_fault(self) -> Fault | None:
        """Why the workers' reports cannot be trusted now (None: they can)."""
        return self._loops.first(WORKER_LOOPS)

    @property
    def queue_error(self) -> str | None:
        """Why the queue sorted sets could not be read (None: the last reading is current)."""
        fault = self._loops.first(("queues",))
        return fault.message if fault else None

    # --- heartbeats ---------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        reconnect = False
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.protocol.heartbeat_channel)
                if reconnect:
                    self._await_full_resync()
                reconnect = True
                self._loops.record("heartbeats", None)
                async for message in pubsub.listen():
                    self.handle_message(message.get("data"))
            except (RedisError, OSError) as exc:
                await self._failed("heartbeats", exc, "heartbeat subscription failed")
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(RedisError, RuntimeError, OSError):
                    await pubsub.aclose()

    def _await_full_resync(self) -> None:
        """Heartbeats published while unsubscribed are lost (and a failover or a restart may have
        lost keys): re-read every worker now, and trust nothing until that resync is done."""
        self._gate.reconnected(self.clock.monotonic())
        self._loops.awaiting_resync()
        asyncio.get_running_loop().call_later(SETTLE_SECONDS + 0.01, self._resync_now.set)

    def handle_message(self, raw: object) -> None:
        """A message on the heartbeat channel: a heartbeat, a worker going offline, or ignored."""
        heard = parse_channel_message(self.protocol, raw, self.max_message_bytes, self._refusals)
        if isinstance(heard, Heartbeat):
            report = heard.report
            routed = self._subs.route(report.worker_id, report.pool, report.namespace)
            if (routed or len(self._heard) < MAX_HEARD) and len(report.worker_id) <= MAX_POD_NAME:
                self._heard[report.worker_id] = (self.clock.monotonic(), _name(report.pool), _name(report.namespace))
            for sub in routed:
                sub.listener.on_heartbeat(report)
        elif isinstance(heard, Offline):
            self._heard.pop(heard.worker_id, None)
            for sub in self._subs.route(heard.worker_id, None, None):
                sub.listener.on_offline(heard.worker_id)
        # Ignored: other event types share the channel (Bifrost's pool_scaling, ...): no log line each.

    # --- queues --------------------------------------------------------------------------------

    async def _poll_queues(self) -> None:
        while True:
            keys = sorted({s.queue_key for s in self.subscribers.values() if s.queue_key is not None})
            if keys:
                try:
                    readings, faults = await read_queues(self.client, keys, self.clock.time())
                except (RedisError, OSError) as exc:
                    await self._failed("queues", exc, "queue reading failed")
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self._loops.record("queues", None)
                for key, status in self._queues.update(readings, faults):
                    for sub in list(self.subscribers.values()):
                        if sub.queue_key == key:
                            sub.listener.on_queue(status)
            await asyncio.sleep(self.queue_poll_seconds)

    def queue(self, key: str) -> QueueStatus | None:
        """The last queue reading, None while the queue cannot be read."""
        return self._queues.current(key, self.queue_error)

    def queue_fault(self, key: str) -> str | None:
        """Why this queue key cannot be read now (the hub's queue loop, or the key itself)."""
        return self.queue_error or self._queues.faults.get(key)

    # --- resync ----------------------------------------------------------------------------------

    async def _resync_loop(self) -> None:
        while True:
            started = self.clock.monotonic()
            try:
                await self.resync()
            except (RedisError, OSError) as exc:
                await self._failed("resync", exc, "resync failed")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if self._gate.trusts(started):  # else a reconnect asked for a later full resync
                self._loops.record("resync", None)
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
        full = self._gate.take(self.clock.monotonic())
        try:
            await self._resync(full)
        except BaseException:
            self._gate.failed(full)
            raise

    async def _resync(self, full: bool) -> None:
        proto = self.protocol
        ids = worker_ids(proto, [k async for k in self.client.scan_iter(match=proto.registration_match, count=1000)])
        new = self._subs.take_new()
        now, subs, heard = self.clock.monotonic(), self.subscribers, self._heard
        stale = ids if full else not_heard_lately(ids, new, heard, subs, now, self.resync_seconds)
        regs = await read_reports(self.client, proto, stale, self._refusals, self.max_message_bytes)
        present, grouped = group_by_pool(self.subscribers, ids, set(stale), regs, self._heard)
        known = set(ids)
        self._heard = {i: h for i, h in self._heard.items() if i in known}
        await hand_out(self.subscribers, present, grouped)


Heard = dict[str, tuple[float, str | None, str | None]]  # worker id -> (when, its pool, its namespace)


def _name(value: str | None) -> str | None:
    """A pool's or namespace's name as remembered: one longer than Kubernetes allows names none."""
    return value if value is None or len(value) <= MAX_NAME else ""


def worker_ids(protocol: WorkerProtocol, keys: list[bytes | str]) -> list[str]:
    """The workers a SCAN's keys name, once each: a worker may have several keys (Bifrost's); a
    worker id is a pod name (253 characters at most), and a longer one is no worker's."""
    found = (protocol.worker_id_from_key(k.decode() if isinstance(k, bytes) else k) for k in keys)
    return list(dict.fromkeys(i for i in found if i and len(i) <= MAX_POD_NAME))


async def hand_out(
    subscribers: dict[tuple[str, str], Subscriber],
    present: dict[tuple[str, str], set[str]],
    grouped: dict[tuple[str, str], dict[str, WorkerReport]],
) -> None:
    """Each pool's part of a resync, RESYNC_BATCH pools at a time."""
    for n, (key, pool_regs) in enumerate(grouped.items(), start=1):
        listening = subscribers.get(key)
        if listening is not None:
            listening.listener.on_resync(present[key], pool_regs)
        if n % RESYNC_BATCH == 0:
            await asyncio.sleep(0)  # let heartbeats, watches and rounds run between batches


def not_heard_lately(
    ids: list[str],
    new_pools: set[tuple[str, str]],
    heard: Heard,
    subscribers: dict[tuple[str, str], Subscriber],
    now: float,
    default: float,
) -> list[str]:
    """The workers whose reports are re-read: not heard within their trust window, or of a new pool."""
    return [i for i in ids if not heard_lately(heard, subscribers, i, now, default) or heard_for(heard, i, new_pools)]


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
