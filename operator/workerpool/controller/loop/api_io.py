"""A pool controller's helpers that talk to the API server on its behalf: Events
(deduplicated), status writes (through the write policy), the Redis URL (from
the spec or a Secret, cached), and the pool's metrics."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from ...contracts.report import PROCESS_STATES
from ...contracts.resource import SecretKeyRef
from ...decide.backoff import Backoff, parse_retry_after
from ...decide.events import Event
from ...decide.observation import Observation
from ...decide.reasons import Reason
from ...decide.scaling import ScalePlan
from ...decide.stalls import secret_missing
from ...decide.status import Stall, WritePolicy, merge_patch, should_write
from ..ports import ApiError, KubeApi, retry_after
from ..process import metrics
from ..process.clock import Clock

log = logging.getLogger(__name__)

EVENT_REPEAT_SECONDS = 60.0
SECRET_TTL = 30.0
REFRESH_AFTER = 0.05  # a status write that waited longer for its turn is re-rendered before it goes


class EventEmitter:
    """Events on one WorkerPool; the same reason and message at most once a minute."""

    def __init__(self, kube: KubeApi, namespace: str, name: str, clock: Clock, uid: str = "") -> None:
        self.kube, self.namespace, self.name, self.clock = kube, namespace, name, clock
        self.uid = uid
        self.recent: dict[tuple[str, str], float] = {}

    async def emit(self, event: Event) -> None:
        key = (event.reason, event.message)
        now = self.clock.monotonic()
        if now - self.recent.get(key, -1e9) < EVENT_REPEAT_SECONDS:
            return
        self.recent = {k: t for k, t in self.recent.items() if now - t < EVENT_REPEAT_SECONDS}
        self.recent[key] = now
        log.info("%s/%s: %s: %s", self.namespace, self.name, event.reason, event.message)
        ref = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        await self.kube.event(ref, event.type, event.reason, event.message)


class PoolRetry:
    """Per pool: under sustained errors (429s from a busy API server) pools spread out and slow down."""

    def __init__(self, namespace: str, name: str) -> None:
        self.backoff = Backoff()
        self.gauge = metrics.RETRY_DELAY.labels(namespace, name)

    def failed(self, retry_after: float | None) -> float:
        delay = self.backoff.next_delay(random.random(), retry_after)
        self.gauge.set(delay)
        return delay

    def succeeded(self) -> None:
        if self.backoff.failures:
            self.backoff.reset()
            self.gauge.set(0)


def count_write_failure(namespace: str, name: str, exc: Exception, kind: str) -> tuple[str, float | None]:
    """Count a failed write of the pool's in `workerpool_reconcile_errors_total` (reason `api<status>`,
    else `kind`): what to log of it, and the API server's Retry-After in seconds (None: none asked)."""
    if isinstance(exc, ApiError):
        metrics.ERRORS.labels(namespace, name, f"api{exc.status}").inc()
        return f"API error {exc.status} {exc.reason}", parse_retry_after(retry_after(exc))
    metrics.ERRORS.labels(namespace, name, kind).inc()
    return type(exc).__name__, None


class StatusWriter:
    """The pool's status subresource, written when the write policy says so (merge patches).

    A round never waits for its status write's turn: it hands over what it
    rendered (and how to render it again) and goes on, and a writer task of the
    pool's takes the turn and sends the newest state then. When the API server
    is slower than the work, a pool's next round (its scale-up, a replacement)
    would otherwise wait behind its own status write, and so behind every
    pool's queued before it. One write per pool is pending at a time, so the
    queue holds the stalest pools first and each writes its newest state:
    waiting coalesces changes instead of making the status lag by the queue's
    length. A failed write is retried by the writer (backoff, Retry-After),
    newest state again, without failing the pool's rounds.
    """

    def __init__(
        self,
        kube: KubeApi,
        namespace: str,
        name: str,
        policy: WritePolicy,
        clock: Clock,
        wake: Callable[[], None] = lambda: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.kube, self.namespace, self.name, self.policy, self.clock = kube, namespace, name, policy, clock
        self.wake, self.sleep = wake, sleep  # wake: the pool's loop, when a held-back write becomes due
        self.last_written: dict[str, Any] | None = None
        self.last_write_at = 0.0
        self.next_write_at: float | None = None  # when a held-back change is due
        self.backoff = Backoff()  # its own: the rounds' retry delay is theirs
        self._latest: tuple[dict[str, Any], Render | None] | None = None  # the newest round's status
        self._decided_at = 0.0  # when the pending write was decided
        self._wanted = False  # a write is due: the writer sends the newest state at its turn
        self._writer: asyncio.Task[None] | None = None
        self._sending = False  # the writer has its turn: its request is at the API server

    def forget(self, stored: dict[str, Any] | None) -> None:
        """Someone else may have written since: patch against what is stored now (nulls clear its extras)."""
        self.last_written, self.last_write_at, self.next_write_at = dict(stored or {}) or None, 0.0, None

    async def stop(self) -> None:
        """No more writes (leadership lost, the pool gone): a pending one is dropped."""
        self._wanted = False
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        metrics.STATUS_PENDING_SINCE.labels(self.namespace, self.name).set(0)

    async def settled(self) -> None:
        """Return when no write is pending (tests; a clean stop)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    async def write(self, rendered: dict[str, Any], current: Render | None = None, urgent: bool = False) -> None:
        """Hand over the round's status: written if the policy says so, by the writer at its turn;
        `current()` renders it again then. `urgent` (a new lastRecycle): now, in the round, ahead
        of other pools' status writes (a failure fails the round)."""
        now = self.clock.monotonic()
        self._latest = (rendered, current)
        write, wait = should_write(rendered, self.last_written, self.last_write_at, now, self.policy)
        if urgent and rendered != self.last_written:
            await self._yield_to_urgent()
            await self._send(urgent=True)
            return
        if not write:
            self.next_write_at = self._held_until(rendered, now + wait)
            return
        # Handed to the writer, which says when a held-back change is due (and wakes the loop):
        # a due time left here, now past, would spin the pool's loop with zero timeouts.
        self.next_write_at = None
        if not self._wanted:
            self._wanted, self._decided_at = True, now
            metrics.STATUS_PENDING_SINCE.labels(self.namespace, self.name).set(self.clock.time())
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name=f"status-{self.namespace}-{self.name}")

    async def _yield_to_urgent(self) -> None:
        """A pending write gives way (it would send the same newest state); one already at the API
        server is let finish, so two patches of one status never cross."""
        if self._writer is None or self._writer.done():
            return
        if not self._sending:
            self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._wanted = False

    async def _write_pending(self) -> None:
        """The writer: while a write is due, send the newest state; after a failure, wait (backoff,
        Retry-After) and send the newest state again."""
        while self._wanted:
            self._wanted = False
            try:
                await self._send(urgent=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._wanted = True
                await self.sleep(self._failed(exc))
                continue
            self.backoff.reset()
        metrics.STATUS_PENDING_SINCE.labels(self.namespace, self.name).set(0)
        if self.next_write_at is not None:
            self.wake()  # a held-back change: the loop's next wake-up must include it

    def _failed(self, exc: Exception) -> float:
        """Count and log a failed write: the seconds before the next try (backoff, Retry-After)."""
        why, asked = count_write_failure(self.namespace, self.name, exc, "status")
        delay = self.backoff.next_delay(random.random(), asked)
        log.warning("%s/%s: status write failed (%s); trying again in %.1f s", self.namespace, self.name, why, delay)
        return delay

    async def _send(self, urgent: bool) -> None:
        """One patch of the newest state, rendered again if the write waited for its turn."""
        decided_at, due = self._decided_at, None
        sent: dict[str, Any] | None = None

        def patch() -> dict[str, Any] | None:
            nonlocal sent, due
            self._sending = True
            later = self.clock.monotonic()
            assert self._latest is not None
            sent, current = self._latest
            if current is not None and (urgent or later - decided_at > REFRESH_AFTER):
                sent = current() or sent
            still, wait = should_write(sent, self.last_written, self.last_write_at, later, self.policy)
            if not still and not (urgent and sent != self.last_written):  # undone while it waited
                due = self._held_until(sent, later + wait)
                return None
            return merge_patch(sent, self.last_written)

        try:
            if await self.kube.patch_status(self.namespace, self.name, patch, urgent):
                metrics.STATUS_WRITES.labels(self.namespace, self.name).inc()
                self.last_written, self.last_write_at = sent, self.clock.monotonic()
        finally:
            self._sending = False
        self.next_write_at = due

    def _held_until(self, rendered: dict[str, Any], due: float) -> float | None:
        """When a status held back now must be written (None: nothing differs from what is stored)."""
        return due if rendered != self.last_written else None


Render = Callable[[], dict[str, Any] | None]


class UrlSource:
    """A URL of the pool's (Redis, RabbitMQ): inline, or a Secret's key (read at most every SECRET_TTL s)."""

    def __init__(
        self, kube: KubeApi, namespace: str, clock: Clock, reason: Reason = Reason.REDIS_SECRET_NOT_FOUND
    ) -> None:
        self.kube, self.namespace, self.clock = kube, namespace, clock
        self.reason = reason  # the Stalled reason when the Secret or its key is missing
        self.cache: tuple[tuple[str, str], str | None, float] | None = None

    async def get(self, url: str | None, secret: SecretKeyRef | None) -> tuple[str | None, Stall | None]:
        if url is not None:
            return url, None
        assert secret is not None  # admission: exactly one of url / urlSecretRef
        ref = (secret.name, secret.key)
        cached = self.cache
        if cached is None or cached[0] != ref or self.clock.monotonic() - cached[2] > SECRET_TTL:
            value = await self.kube.read_secret_key(self.namespace, *ref)
            self.cache = cached = (ref, value, self.clock.monotonic())
        if cached[1] is None:
            return None, secret_missing(self.reason, ref[0], ref[1], self.namespace)
        return cached[1].strip(), None


def export_metrics(namespace: str, name: str, obs: Observation, plan: ScalePlan) -> None:
    active = [p for p in obs.pods if p.active]
    metrics.WORKERS.labels(namespace, name, "running").set(sum(1 for p in active if p.phase == "Running"))
    metrics.WORKERS.labels(namespace, name, "pending").set(sum(1 for p in active if p.phase == "Pending"))
    metrics.WORKERS.labels(namespace, name, "ready").set(sum(1 for p in active if p.ready and p.name in obs.workers))
    for state in PROCESS_STATES:
        metrics.PROCESSES.labels(namespace, name, state).set(
            sum(1 for w in obs.workers.values() for p in w.info.processes if p.state == state)
        )
    metrics.DESIRED.labels(namespace, name).set(plan.desired)
    if obs.queue is not None:
        metrics.QUEUE_DEPTH.labels(namespace, name).set(obs.queue.depth)
