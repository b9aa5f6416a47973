"""TEST INFRASTRUCTURE — a worker that speaks Bifrost's wire, for tests and benchmarks only.

Written from the observed facts (the shared `notes/bifrost-wire.md` and the
recorded samples in `tests/data/bifrost/`), never from Bifrost's code, and never
shipped: it runs from a ConfigMap in test pods (or as a local process), with
nothing but the standard library, redis-py and aio-pika. It behaves as the real
worker does where the operator can tell:

- registers `bifrost:pool:{HOSTNAME}` (started_at, status, hostname, packages),
  TTL 30 s, refreshed by EXPIRE each heartbeat and never re-created;
- every heartbeat interval: the heartbeat JSON to `bifrost:pool:{id}:heartbeat`
  (TTL 60 s) and to `bifrost:platform_workers`; a `pool_progress` event at start;
- consumes `workflow-executions` (declared as Bifrost does, with its dead-letter
  arguments) with prefetch = `BIFROST_MAX_CONCURRENCY`, into a pool of
  `BIFROST_MAX_WORKERS` child slots; a delivery waits unacknowledged for a free
  slot up to 30 s (Bifrost's `_wait_for_slot`), then fails with "No worker slot
  available after timeout" and is rejected without requeue, so RabbitMQ
  dead-letters it to `workflow-executions-poison`; a message is acknowledged
  only once its child runs (a waiting one is neither ready in the queue nor
  busy in a heartbeat: the demand the operator must count from RabbitMQ);
- the slot pool is on with `BIFROSTWIRE_SLOTS=1` (the integration tests of it);
  without, every delivery gets a child at once, as this test bed's worker did
  before: the e2e suite's scenarios were written for that, and moving them to
  the held deliveries is issue 30's next step;
- starts consuming `BIFROSTWIRE_STARTUP_SECONDS` after it starts (the real
  worker takes about 6 s alone to install its packages and fork its template);
- runs each execution in a child process (no idle children: `idle_count` 0);
  an execution over its timeout is `killed` (still carrying its execution) for
  the graceful seconds, then SIGKILLed;
- `recycle_process` / `recycle_all` on `bifrost:pool:{id}:commands`: waits up
  to the recycle wait for running children, kills what still runs (no result);
  any other action: "Unknown command action", ignored;
- SIGTERM, as the worker of commit 841bc8e: cancels its consumer, stops its
  children (SIGTERM, the graceful seconds, SIGKILL) and reports nothing for
  them, deletes its registration, publishes `worker_offline`, exits. That is
  how Bifrost loses executions.
- SIGTERM with `BIFROSTWIRE_DRAIN=1`, as Bifrost's newer worker (its PR 757):
  cancels its consumer (deliveries still waiting for a slot go back to the
  queue), waits for its running children and their results up to
  `BIFROST_DRAIN_DEADLINE_SECONDS`, then kills what still runs and records a
  `WorkerShutdown` failure for each (durable: the execution is failed, never
  lost), and exits as above.

Where the real worker writes results to PostgreSQL, this one records, for the
tests to count, in Redis lists of its own (`bifrostwire:*`): every delivery,
every result, every command received.

An execution message: {"execution_id": str, "seconds": float, "ignore_term": bool}.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

log = logging.getLogger("bifrost-wire")

KEY_PREFIX = "bifrost:pool:"
EVENTS_CHANNEL = "bifrost:platform_workers"
QUEUE = "workflow-executions"
DLX = "workflow-executions-dlx"
POISON = "workflow-executions-poison"
SNAPSHOT_TTL = 60
# The test bed's own records (the real worker writes its results to PostgreSQL).
DELIVERIES = "bifrostwire:deliveries"
RESULTS = "bifrostwire:results"
COMMANDS = "bifrostwire:commands"
PACKAGES = [{"name": "aio-pika", "version": "9"}, {"name": "redis", "version": "5"}]
CHILD = (
    "import signal, sys, time\n"
    "if sys.argv[2] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "time.sleep(float(sys.argv[1]))\n"
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    worker_id: str
    redis_url: str
    rabbitmq_url: str
    capacity: int  # child slots (BIFROST_MAX_WORKERS)
    prefetch: int  # deliveries held at once (BIFROST_MAX_CONCURRENCY)
    timeout: float
    graceful: float
    heartbeat: float
    registration_ttl: int
    recycle_wait: float
    slots: bool = False  # the slot pool (BIFROSTWIRE_SLOTS=1): deliveries wait for a free child slot
    slot_wait: float = 30.0
    startup: float = 0.0
    drain: bool = False
    drain_deadline: float = 0.0

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            worker_id=os.environ.get("HOSTNAME") or os.uname().nodename,
            redis_url=os.environ["BIFROST_REDIS_URL"],
            rabbitmq_url=os.environ["BIFROST_RABBITMQ_URL"],
            capacity=env_int("BIFROST_MAX_WORKERS", 10),
            prefetch=env_int("BIFROST_MAX_CONCURRENCY", 10),
            timeout=float(env_int("BIFROST_EXECUTION_TIMEOUT_SECONDS", 300)),
            graceful=float(env_int("BIFROST_GRACEFUL_SHUTDOWN_SECONDS", 5)),
            heartbeat=float(env_int("BIFROST_WORKER_HEARTBEAT_INTERVAL_SECONDS", 10)),
            registration_ttl=env_int("BIFROST_WORKER_REGISTRATION_TTL_SECONDS", 30),
            recycle_wait=float(os.environ.get("BIFROSTWIRE_RECYCLE_WAIT_SECONDS", "60")),
            slots=os.environ.get("BIFROSTWIRE_SLOTS", "") == "1",
            slot_wait=float(os.environ.get("BIFROSTWIRE_SLOT_WAIT_SECONDS", "30")),
            startup=float(os.environ.get("BIFROSTWIRE_STARTUP_SECONDS", "0")),
            drain=os.environ.get("BIFROSTWIRE_DRAIN", "") == "1",
            drain_deadline=float(env_int("BIFROST_DRAIN_DEADLINE_SECONDS", 0)),
        )


@dataclass
class Child:
    proc: asyncio.subprocess.Process
    process_id: str
    execution_id: str
    started_at: dt.datetime
    started: float = field(default_factory=time.monotonic)
    state: str = "busy"
    stopping: bool = False  # killed by a recycle or a shutdown: no result
    watcher: asyncio.Task[None] | None = None  # waits for it to end and records its result

    def entry(self, completed: int) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "pid": self.proc.pid,
            "process_id": self.process_id,
            "state": self.state,
            "memory_mb": rss_mb(self.proc.pid),
            "private_dirty_kb": int(rss_mb(self.proc.pid) * 1024),
            "uptime_seconds": round(elapsed, 6),
            "executions_completed": completed,
            "execution": {
                "execution_id": self.execution_id,
                "started_at": self.started_at.isoformat(),
                "elapsed_seconds": round(elapsed, 6),
            },
        }


def rss_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115 - tiny file
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class BifrostWireWorker:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.key = f"{KEY_PREFIX}{settings.worker_id}"
        self.started_at = now()
        self.children: dict[int, Child] = {}
        self.completed = 0
        self.counter = 0
        self.stopping = asyncio.Event()
        self.slot_free = asyncio.Condition()
        self.taken = 0  # child slots granted (the slot pool's count)
        self.waiting: set[AbstractIncomingMessage] = set()  # delivered, unacknowledged, waiting for a slot
        self.redis = aioredis.Redis.from_url(settings.redis_url)

    # --- the wire ---------------------------------------------------------------------

    def heartbeat(self) -> dict[str, Any]:
        processes = [c.entry(self.completed) for c in self.children.values()]
        busy = sum(1 for c in self.children.values() if c.state == "busy")
        return {
            "type": "worker_heartbeat",
            "worker_id": self.s.worker_id,
            "hostname": self.s.worker_id,
            "status": "online",
            "started_at": self.started_at.isoformat(),
            "timestamp": now().isoformat(),
            "processes": processes,
            "pool_size": len(processes),
            "idle_count": 0,
            "busy_count": busy,
            "requirements_installed": 0,
            "requirements_total": 0,
            "memory_current_bytes": -1,
            "memory_max_bytes": -1,
        }

    async def register(self) -> None:
        fields = {
            "hostname": self.s.worker_id,
            "packages": json.dumps(PACKAGES),
            "status": "online",
            "started_at": self.started_at.isoformat(),
        }
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.key, mapping=fields)  # type: ignore[arg-type]
            p.expire(self.key, self.s.registration_ttl)
            await p.execute()

    async def beat(self) -> None:
        payload = json.dumps(self.heartbeat())
        async with self.redis.pipeline(transaction=False) as p:
            p.set(f"{self.key}:heartbeat", payload, ex=SNAPSHOT_TTL)
            p.publish(EVENTS_CHANNEL, payload)
            p.expire(self.key, self.s.registration_ttl)  # never re-created if it lapsed
            await p.execute()

    async def heartbeats(self) -> None:
        while True:
            try:
                await self.beat()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("heartbeat failed: %s", type(exc).__name__)
            await asyncio.sleep(self.s.heartbeat)

    # --- executions -----------------------------------------------------------------------

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        execution_id = str(body["execution_id"])
        await self.redis.rpush(
            DELIVERIES, json.dumps({"execution_id": execution_id, "worker_id": self.s.worker_id, "at": time.time()})
        )
        self.waiting.add(message)
        try:
            slot = await self.wait_for_slot()
            if slot == "stopping":
                return  # given back to the queue by the shutdown
            if slot == "timeout":
                # Bifrost's RuntimeError: the message is rejected, and RabbitMQ dead-letters it.
                await self.record_failure(execution_id, "RuntimeError", "No worker slot available after timeout")
                await message.reject(requeue=False)
                return
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    CHILD,
                    str(float(body.get("seconds", 1))),
                    "1" if body.get("ignore_term") else "0",
                )
            except BaseException:
                await self.freed()  # the slot it was granted
                raise
        finally:
            self.waiting.discard(message)
        self.counter += 1
        child = Child(proc, f"process-{self.counter}", execution_id, now())
        self.children[proc.pid] = child
        # No heartbeat now: the real worker reports only every interval (the race the operator narrows).
        child.watcher = asyncio.get_running_loop().create_task(self.watch(child))
        try:
            await message.ack()  # once dispatched, as Bifrost does: a lost execution is not redelivered
        except Exception as exc:  # the broker went away: the child still runs and reports
            log.warning("ack of %s failed (%s): the broker will deliver it again", execution_id, type(exc).__name__)

    async def wait_for_slot(self) -> str:
        """ "slot" (a child slot is free), "timeout" (none within the slot wait) or "stopping"."""
        if not self.s.slots:
            return "stopping" if self.stopping.is_set() else "slot"
        # A slot is taken when granted (not when its child appears, an await later): deliveries
        # that arrive together must not all see the same free slot.
        free = lambda: self.taken < self.s.capacity or self.stopping.is_set()  # noqa: E731
        async with self.slot_free:
            try:
                await asyncio.wait_for(self.slot_free.wait_for(free), self.s.slot_wait)
            except TimeoutError:
                return "timeout"
            if self.stopping.is_set():
                return "stopping"
            self.taken += 1
        return "slot"

    async def freed(self, slot: bool = True) -> None:
        async with self.slot_free:
            if slot and self.s.slots:
                self.taken -= 1
            self.slot_free.notify_all()

    async def watch(self, child: Child) -> None:
        try:
            await asyncio.wait_for(child.proc.wait(), timeout=self.s.timeout)
        except TimeoutError:
            child.state = "killed"
            await self.kill(child)
            if not child.stopping:
                await self.record(child, success=False, error_type="TimeoutError")
        else:
            if not child.stopping and child.proc.returncode == 0:
                self.completed += 1
                await self.record(child, success=True, error_type=None)
        self.children.pop(child.proc.pid, None)
        await self.freed()

    async def kill(self, child: Child) -> None:
        """SIGTERM, the graceful seconds, SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            child.proc.terminate()
        try:
            await asyncio.wait_for(child.proc.wait(), timeout=self.s.graceful)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await child.proc.wait()

    async def record(self, child: Child, *, success: bool, error_type: str | None) -> None:
        await self.record_result(child.execution_id, success, error_type, None)

    async def record_failure(self, execution_id: str, error_type: str, error: str) -> None:
        await self.record_result(execution_id, False, error_type, error)

    async def record_result(self, execution_id: str, success: bool, error_type: str | None, error: str | None) -> None:
        result = {
            "execution_id": execution_id,
            "worker_id": self.s.worker_id,
            "success": success,
            "error_type": error_type,
            "error": error,
            "at": time.time(),  # producer-to-result latency (the benchmarks)
        }
        await self.redis.rpush(RESULTS, json.dumps(result))

    # --- commands -------------------------------------------------------------------------------

    async def commands(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(f"{self.key}:commands")
        async for message in pubsub.listen():
            raw = message.get("data")
            try:
                command = json.loads(raw)
                action = command.get("action") if isinstance(command, dict) else None
            except ValueError:
                action = None
            handled = action in ("recycle_process", "recycle_all")
            if not handled:
                log.warning("Unknown command action: %r", action)
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            record = {"worker_id": self.s.worker_id, "raw": text, "handled": handled, "at": time.time()}
            await self.redis.rpush(COMMANDS, json.dumps(record))
            if handled:
                await self.recycle()

    async def recycle(self) -> None:
        """Bifrost's recycle, whatever the pid: wait for running children, kill the rest, restart the pool."""
        running = [asyncio.ensure_future(c.proc.wait()) for c in self.children.values()]
        if running:
            await asyncio.wait(running, timeout=self.s.recycle_wait)
        for child in list(self.children.values()):
            child.stopping = True
            await self.kill(child)
        log.info("recycled the process pool")

    # --- life cycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.sleep(self.s.startup)  # the real worker's own start (packages, its template)
        connection = await aio_pika.connect(self.s.rabbitmq_url)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.s.prefetch)
        queue = await declare_queues(channel)
        await self.register()
        tag = await queue.consume(self.on_message)
        await self.redis.publish(EVENTS_CHANNEL, json.dumps({"type": "pool_progress", "worker_id": self.s.worker_id}))
        loops = [asyncio.create_task(self.heartbeats()), asyncio.create_task(self.commands())]
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        log.info(
            "worker %s consuming %s (%d slots, prefetch %d)", self.s.worker_id, QUEUE, self.s.capacity, self.s.prefetch
        )
        await self.stopping.wait()
        await queue.cancel(tag)  # no new deliveries
        await self.freed(slot=False)  # wakes the deliveries waiting for a slot: they end without one
        for message in list(self.waiting):  # not dispatched: back to the queue, for another worker
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        if self.s.drain:
            await self.drain()
        log.info("stopping: %d running execution(s) get SIGTERM, then SIGKILL", len(self.children))
        for child in list(self.children.values()):
            child.stopping = True  # killed by the shutdown: no result, as the real worker
        await asyncio.gather(*(self.kill(c) for c in list(self.children.values())))
        for task in loops:
            task.cancel()
        await self.redis.delete(self.key)
        await self.redis.publish(
            EVENTS_CHANNEL,
            json.dumps({"type": "worker_offline", "worker_id": self.s.worker_id, "timestamp": now().isoformat()}),
        )
        await connection.close()
        await self.redis.aclose()

    async def drain(self) -> None:
        """The newer worker's SIGTERM: its children finish (with their results) up to the drain
        deadline; each one still running then is recorded failed (WorkerShutdown) before it is killed."""
        watchers = [c.watcher for c in self.children.values() if c.watcher is not None]
        log.info("draining: %d running execution(s), deadline %.0f s", len(watchers), self.s.drain_deadline)
        if watchers:  # each ends once its child has ended and its result is recorded
            await asyncio.wait(watchers, timeout=self.s.drain_deadline)
        for child in list(self.children.values()):
            child.stopping = True
            await self.record_failure(child.execution_id, "WorkerShutdown", "drain deadline passed")


async def declare_queues(channel: aio_pika.abc.AbstractChannel) -> AbstractQueue:
    """The work queue as Bifrost declares it: durable, dead-lettered to a poison queue."""
    dlx = await channel.declare_exchange(DLX, aio_pika.ExchangeType.FANOUT, durable=True)
    poison = await channel.declare_queue(POISON, durable=True)
    await poison.bind(dlx)
    return await channel.declare_queue(QUEUE, durable=True, arguments={"x-dead-letter-exchange": DLX})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    asyncio.run(BifrostWireWorker(Settings.from_env()).run())


if __name__ == "__main__":
    main()
