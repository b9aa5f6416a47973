"""Answering evictions of worker pods (the validating webhook on `pods/eviction`).

An Eviction names only the pod (admission objectSelectors cannot see the pod's
labels for the eviction subresource, kubernetes#110169), so every eviction in
the cluster reaches the webhook and is matched here, in memory, against the
pods the pool controllers watch: anything that is not one of our worker pods
is allowed at once.

For a worker pod with the retire handshake (seed): retire the worker in Redis
(it claims nothing new) and ask what it still holds, in one script; allow when
nothing, hold with 429 when something (the evicting client retries). For one
without (Bifrost's): its heartbeat snapshot, read now, decides the same way;
a snapshot too old to trust holds the eviction as unknown (and its pod keeps
counting: that worker still takes deliveries). A worker that
drains on SIGTERM (`drainsOnSigterm`) is allowed at once: the deletion that
follows retires it, and it finishes what it holds. A held pod is annotated, so the
acting replica counts it as leaving and creates its replacement if demand
needs it. Any replica can answer: Redis is the authority, not a replica's memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from ...contracts import names
from ...contracts.report import WorkerReport
from ...contracts.wire import WireFormatError
from ...decide.eviction import EvictionVerdict, hold_expired, judge_draining, judge_eviction
from ...decide.observation import EVICTION_MARK_SECONDS, PodView
from ...decide.snapshot import snapshot_holds
from ...redis_connect import RedisAccess
from ..adapters.kube import ApiException
from ..ports import Commands, EvictedPool, KubeApi, PodOwners
from ..process import metrics
from ..process.clock import Clock

log = logging.getLogger(__name__)

# How long a worker retired for an eviction stays retired without a retry of the
# eviction (drains retry every few seconds; an abandoned drain lets it work again).
EVICTION_RETIRE_TTL = int(EVICTION_MARK_SECONDS)
MARK_REFRESH = EVICTION_MARK_SECONDS / 2


class EvictionGate:
    def __init__(
        self,
        owners: PodOwners,
        commands_for: Callable[[RedisAccess, str], Commands],
        kube: KubeApi,
        clock: Clock,
    ) -> None:
        self.owners = owners  # the pool of a worker pod, by the pod watch
        self.commands_for, self.kube, self.clock = commands_for, kube, clock
        self._recording: set[asyncio.Task[None]] = set()  # Events and marks being written (kept referenced)

    async def review(self, namespace: str, pod: str, dry_run: bool) -> EvictionVerdict | None:
        """None: not one of our worker pods (allow)."""
        pool = self.owners.pool_of(namespace, pod)
        if pool is None:
            return None
        info = pool.last_report(pod)
        if pool.drains_on_sigterm():
            verdict = judge_draining(pod, info)  # its SIGTERM retires it: nothing to ask Redis
            if not dry_run:
                await self._tell(pool, pod, verdict)
            return verdict
        if dry_run:  # no side effects: judged by the last heartbeat alone
            verdict = judge_eviction(pod, list(info.running) if info else [], info)
        else:
            asked = await self._ask(pool, pod)
            if info is None and asked.held and asked.commands is not None:
                info = asked.report or await _report(asked.commands, pod)  # a standby hears no heartbeats
            verdict = judge_eviction(pod, asked.held, info, asked.handshake, asked.why)
            if not verdict.allowed:
                verdict = hold_expired(verdict, pod, self._held_for(pool, pod), pool.hold_limit())
            await self._tell(pool, pod, verdict)
        return verdict

    async def _ask(self, pool: EvictedPool, pod: str) -> _Answer:
        """What the worker holds, asked of Redis now (by the retire script, or its snapshot)."""
        view = pool.pod(pod)
        handshake = True
        if (fault := pool.redis_fault()) is not None:
            # A failover or an outage (or the resync after it): what Redis says now may miss what
            # the old primary took with it. Unknown, so held (a pod that never ran holds nothing).
            log.warning("%s/%s: eviction of %s: %s", pool.namespace, pool.name, pod, fault.message)
            return _unknown(view, handshake)
        try:
            # A standby replica answers too: it resolves the pool's Redis itself.
            target = await pool.redis_target()
            if target is not None:
                commands = self.commands_for(target.access, target.protocol.name)
                handshake = commands.has_handshake
                if handshake:
                    held = await commands.retire_for_eviction(pod, target.queue_key, EVICTION_RETIRE_TTL)
                    return _Answer(held, commands)
                report = await commands.report(pod)
                held_now, why = snapshot_holds(report, self.clock.time(), target.window)
                return _Answer(held_now, commands, handshake=False, why=why, report=report)
        except (RedisError, OSError, ApiException, WireFormatError) as exc:
            error = type(exc).__name__
            log.warning("%s/%s: eviction of %s: Redis unavailable: %s", pool.namespace, pool.name, pod, error)
        return _unknown(view, handshake)

    async def _tell(self, pool: EvictedPool, pod: str, verdict: EvictionVerdict) -> None:
        outcome = "allowed" if verdict.allowed else "held"
        metrics.EVICTIONS.labels(pool.namespace, pool.name, outcome).inc()
        log.info("%s/%s: eviction of %s %s: %s", pool.namespace, pool.name, pod, outcome, verdict.message)
        # The Event and the mark go after the answer: the API server waits for the answer
        # (5 s at most), and the Event's write may wait for the write rate limiter.
        task = asyncio.create_task(self._record(pool, pod, verdict), name=f"eviction-{pod}")
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, pool: EvictedPool, pod: str, verdict: EvictionVerdict) -> None:
        await pool.emit(verdict.event)
        if not verdict.allowed:
            await self._mark_leaving(pool, pod)

    def _held_for(self, pool: EvictedPool, pod: str) -> float:
        """Seconds since this pod's eviction was first held (0: never before)."""
        view = pool.pod(pod)
        since = view.evicting_since if view is not None else None
        return 0.0 if since is None else max(0.0, self.clock.time() - since)

    async def _mark_leaving(self, pool: EvictedPool, pod: str) -> None:
        """Annotate a held pod (at most every MARK_REFRESH s): the acting replica replaces it; the
        first hold is stamped once, for the hold limit."""
        view = pool.pod(pod)
        now = self.clock.time()
        if view is not None and view.evicting_at is not None and now - view.evicting_at < MARK_REFRESH:
            return
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        marks = {names.EVICTING_ANNOTATION: stamp}
        if view is None or view.evicting_since is None:
            marks[names.EVICTING_SINCE_ANNOTATION] = stamp
        try:
            await self.kube.annotate_pod(pool.namespace, pod, marks)
        except ApiException as exc:  # the answer stands; only the replacement may come later
            log.warning("%s/%s: could not mark %s as leaving: %s", pool.namespace, pool.name, pod, exc.reason)


def _unknown(view: PodView | None, handshake: bool) -> _Answer:
    """No Redis to trust: only a pod whose containers never ran can hold nothing for sure."""
    return _Answer([] if view is not None and view.phase != "Running" else None, None, handshake)


@dataclass(frozen=True)
class _Answer:
    held: list[str] | None  # None: unknown
    commands: Commands | None
    handshake: bool = True
    why: str = ""  # why unknown
    report: WorkerReport | None = None


async def _report(commands: Commands, worker_id: str) -> WorkerReport | None:
    """The worker's registration, for the answer's detail only: anything wrong just leaves it out."""
    try:
        return await commands.report(worker_id)
    except (RedisError, OSError, WireFormatError):
        return None
