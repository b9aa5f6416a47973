"""Where the operator talks to RabbitMQ: the demand of `protocol: bifrost` pools.

One broker per distinct AMQP URL, shared by every pool that uses it: one
connection, one channel, and every `queue_poll_seconds` (250 ms by default) a
passive `queue.declare` of each queue in use, whose reply carries the queue's
ready messages. Passive, because Bifrost declares its queues with dead-letter
arguments and a declare with other arguments fails (and would be a write); a
queue that does not exist closes the channel (404), which is reopened, and that
queue alone reads as unavailable.

aio-pika's robust connection is not used: it reconnects silently, and here a
lost broker must become a condition at once (no scale-down on unknown demand).
The URL may carry a password: it is never logged; logs name the broker by a hash.

With the broker's management API (`spec.rabbitmq.managementUrl`), each poll also
reads each queue's unacknowledged messages (`GET /api/queues/{vhost}/{queue}`):
Bifrost's worker holds a delivery unacknowledged while it waits for a free
process (up to 30 s, then it fails it), so those are demand that neither the
ready count nor any heartbeat shows. The management API's own statistics lag
by its `collect_statistics_interval` (5 s by default). AMQP itself has no way to
ask for them; this is the one reading that needs the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import aiohttp
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from yarl import URL

from ...contracts.wire import QueueStatus
from ...decide.reasons import Reason
from ...decide.stalls import demand_unknown
from ...decide.status import Stall
from ..ports import PoolListener
from ..process import metrics
from ..process.tasks import cancel_and_wait, supervise

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
TIMEOUT_SECONDS = 5.0
FAILURES = (AMQPError, OSError, TimeoutError, RuntimeError, aiohttp.ClientError)
MAX_MANAGEMENT_REPLY = 1024 * 1024  # one queue's JSON is a few KiB: read no more than this of it
MAX_COUNT = 2**53 - 1


def scrub(text: str, url: str) -> str:
    """`text` with the URL, and its password wherever it appears alone, hidden."""
    text = text.replace(url, "<rabbitmq url>")
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text[:200]


@dataclass
class _Listening:
    queues: tuple[str, ...]
    listener: PoolListener


@dataclass
class RabbitBroker:
    url: str
    poll_seconds: float
    management: str | None = None  # the management API's URL: unacknowledged messages count too
    listening: dict[tuple[str, str], _Listening] = field(default_factory=dict)
    error: str | None = None  # the connection's; None while connected
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.label = "rabbitmq-" + hashlib.sha256(self.url.encode()).hexdigest()[:8]
        self._ready: dict[str, int] = {}  # queue -> ready (+ unacknowledged) messages at the last reading
        self._queue_errors: dict[str, str] = {}

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.task = supervise(f"{self.label}-poll", "broker-poll", self._run, self._crashed)

    def _crashed(self, exc: BaseException) -> None:
        """Nothing read before the crash is current: the pools see why until a reading succeeds."""
        self._set_error(f"the operator's poll loop for this broker crashed ({type(exc).__name__}); restarting it")

    async def stop(self) -> None:
        if self.task is not None:
            await cancel_and_wait([self.task])

    def subscribe(self, namespace: str, name: str, queues: tuple[str, ...], listener: PoolListener) -> None:
        self.listening[(namespace, name)] = _Listening(queues, listener)

    def unsubscribe(self, namespace: str, name: str) -> None:
        self.listening.pop((namespace, name), None)

    # --- what pools read --------------------------------------------------------------------

    def reading(self, queues: tuple[str, ...]) -> tuple[QueueStatus | None, Stall | None]:
        """The queues' ready messages summed (None until each was read once), and why it is stalled."""
        if self.error is not None:
            return None, demand_unknown(Reason.RABBITMQ_UNAVAILABLE, f"RabbitMQ unavailable ({self.error})")
        for queue in queues:
            if queue in self._queue_errors:
                return None, demand_unknown(Reason.RABBITMQ_QUEUE_UNAVAILABLE, self._queue_errors[queue])
        if any(q not in self._ready for q in queues):
            return None, None  # not read yet
        return QueueStatus(depth=sum(self._ready[q] for q in queues)), None

    # --- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                connection = await aio_pika.connect(self.url, timeout=TIMEOUT_SECONDS)
            except FAILURES as exc:
                self._set_error(f"cannot connect: {type(exc).__name__}: {scrub(str(exc), self.url)}")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            try:
                async with connection:
                    await self._poll_forever(connection)
            except FAILURES as exc:
                self._set_error(f"connection lost: {type(exc).__name__}: {scrub(str(exc), self.url)}")
                await asyncio.sleep(RETRY_SECONDS)

    async def _poll_forever(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as http:
            self._set_error(None)
            while True:
                channel = await self.poll(connection, channel, http)
                await asyncio.sleep(self.poll_seconds)

    async def poll(
        self, connection: AbstractConnection, channel: AbstractChannel, http: aiohttp.ClientSession | None = None
    ) -> AbstractChannel:
        """Read every queue in use once; the channel to use next (a 404 closes the one used)."""
        before = self._snapshot()
        for queue in sorted({q for sub in self.listening.values() for q in sub.queues}):
            try:
                declared = await asyncio.wait_for(channel.declare_queue(queue, passive=True), TIMEOUT_SECONDS)
            except ChannelNotFoundEntity:
                self._ready.pop(queue, None)
                self._queue_errors[queue] = f"RabbitMQ queue {queue!r} not found"
                channel = await connection.channel()  # the broker closed the channel with the 404
                continue
            result: Any = declared.declaration_result
            ready = int(result.message_count)
            held = await self._held(http, queue) if http is not None and self.management else 0
            if held is None:
                continue  # the management API's fault is recorded: this queue reads as unavailable
            # The management API's numbers are one sample (ready and unacknowledged together), up to
            # its statistics interval old; the AMQP count is now. The larger of the two never counts
            # a message twice (a requeued delivery is in the fresh ready count and in the sample's
            # unacknowledged one) and never misses one that sits in either.
            self._ready[queue] = max(ready, held)
            self._queue_errors.pop(queue, None)
        if self._snapshot() != before:
            self._notify()
        return channel

    async def _held(self, http: aiohttp.ClientSession, queue: str) -> int | None:
        """The queue's messages, ready or delivered and not yet acknowledged, from the management
        API (None: it could not say, and the queue is unavailable until it can: no scale-down on a guess)."""
        assert self.management is not None
        base = URL(self.management)
        vhost = URL(self.url).path.removeprefix("/") or "/"  # the AMQP URL's ("/" when it names none)
        path = f"{base.raw_path.rstrip('/')}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
        url = base.with_user(None).with_password(None).with_path(path, encoded=True)
        auth = aiohttp.BasicAuth(base.user or "", base.password or "") if base.user else None
        try:
            columns = "messages_ready,messages_unacknowledged"
            async with http.get(url, auth=auth, params={"columns": columns}) as reply:
                body = await reply.content.read(MAX_MANAGEMENT_REPLY + 1)
                status = reply.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._queue_errors[queue] = f"RabbitMQ management API unavailable ({type(exc).__name__})"
            return None
        count = _queue_count(status, body)
        if isinstance(count, str):
            self._queue_errors[queue] = f"RabbitMQ management API on queue {queue!r}: {count}"
            return None
        return count

    def _snapshot(self) -> tuple[Any, ...]:
        return tuple(sorted(self._ready.items())), tuple(sorted(self._queue_errors.items())), self.error

    def _set_error(self, error: str | None) -> None:
        if error == self.error:
            return
        if error:
            log.warning("%s unavailable: %s", self.label, error)
            self._ready.clear()  # a reading from before the outage is not current
        else:
            log.info("%s reachable", self.label)
        self.error = error
        metrics.RABBITMQ_UP.labels(broker=self.label).set(0 if error else 1)
        self._notify()

    def _notify(self) -> None:
        for sub in list(self.listening.values()):
            sub.listener.on_health()


def _queue_count(status: int, body: bytes) -> int | str:
    """Ready plus unacknowledged, as a management API reply gives them, or why it gives none
    (bounded, never raises)."""
    if status != 200:
        return f"HTTP {status}"
    if len(body) > MAX_MANAGEMENT_REPLY:
        return "reply too large"
    try:
        data = json.loads(body)
        counts = [data.get(k, 0) for k in ("messages_ready", "messages_unacknowledged")]
    except (ValueError, AttributeError):
        return "not a JSON object"
    total = 0
    for count in counts:
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
            return "a message count that is not one"
        total += count
    return total
