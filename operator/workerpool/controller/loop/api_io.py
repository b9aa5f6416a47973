"""A pool controller's helpers that talk to the API server on its behalf: Events
(deduplicated), status writes (through the write policy), the Redis URL (from
the spec or a Secret, cached), and the pool's metrics."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from ...contracts.report import PROCESS_STATES
from ...contracts.resource import SecretKeyRef
from ...decide.backoff import Backoff
from ...decide.events import Event
from ...decide.observation import Observation
from ...decide.reasons import Reason
from ...decide.scaling import ScalePlan
from ...decide.stalls import secret_missing
from ...decide.status import Stall, WritePolicy, merge_patch, should_write
from ..ports import KubeApi
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


class StatusWriter:
    """The pool's status subresource, written when the write policy says so (merge patches)."""

    def __init__(self, kube: KubeApi, namespace: str, name: str, policy: WritePolicy, clock: Clock) -> None:
        self.kube, self.namespace, self.name, self.policy, self.clock = kube, namespace, name, policy, clock
        self.last_written: dict[str, Any] | None = None
        self.last_write_at = 0.0
        self.next_write_at: float | None = None  # when a held-back change is due

    def forget(self, stored: dict[str, Any] | None) -> None:
        """Someone else may have written since: patch against what is stored now (nulls clear its extras)."""
        self.last_written, self.last_write_at, self.next_write_at = dict(stored or {}) or None, 0.0, None

    async def write(
        self, rendered: dict[str, Any], current: Callable[[], dict[str, Any] | None] | None = None, urgent: bool = False
    ) -> None:
        """Write `rendered` if the policy says so; `current()` re-renders it if the write waited its turn;
        `urgent` (a new lastRecycle): at once, ahead of other pools' status writes.

        A write queued behind the API budget goes out with the status as it is
        then (not as it was when queued): the wait coalesces changes instead of
        making the status lag by the queue's length.
        """
        now = self.clock.monotonic()
        write, wait = should_write(rendered, self.last_written, self.last_write_at, now, self.policy)
        urgent = urgent and rendered != self.last_written
        if not write and not urgent:
            self.next_write_at = self._held_until(rendered, now + wait)
            return
        sent, due = rendered, None

        def patch() -> dict[str, Any] | None:
            nonlocal sent, due
            later = self.clock.monotonic()
            if current is not None and later - now > REFRESH_AFTER:
                sent = current() or sent
                still, wait = should_write(sent, self.last_written, self.last_write_at, later, self.policy)
                if not still and not urgent:  # what made the write worth it was undone while it waited
                    due = self._held_until(sent, later + wait)
                    return None
            return merge_patch(sent, self.last_written)

        pending = metrics.STATUS_PENDING_SINCE.labels(self.namespace, self.name)
        pending.set(self.clock.time())
        try:
            if await self.kube.patch_status(self.namespace, self.name, patch, urgent):
                metrics.STATUS_WRITES.labels(self.namespace, self.name).inc()
                self.last_written, self.last_write_at = sent, self.clock.monotonic()
        finally:
            pending.set(0)
        self.next_write_at = due

    def _held_until(self, rendered: dict[str, Any], due: float) -> float | None:
        """When a status held back now must be written (None: nothing differs from what is stored)."""
        return due if rendered != self.last_written else None


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
