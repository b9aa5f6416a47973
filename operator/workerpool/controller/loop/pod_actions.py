"""Carrying out a scale plan's pod changes: create what it adds, and delete what
it removes only after a last check in Redis: for a worker with the retire
handshake, retiring it (no claim can slip in between the idle heartbeat and the
deletion); for one without (Bifrost's), its heartbeat snapshot read now must
show it runs nothing, and then so must its *next* heartbeat, after which the
pod is deleted at once. Waiting for that heartbeat moves the delete to just
after the worker last said what it runs: the window for a delivery to slip in
shrinks from up to one heartbeat interval to the time one delete call takes
(docs/bifrost.md, "The race"); it delays the removal by up to one interval.
No round waits for it: the round that read the snapshot records the worker as
confirming (PoolState.confirming) and goes on; its next report wakes the pool,
and that round deletes or keeps it (a round at the deadline keeps it).

A Bifrost worker that drains on SIGTERM (`drainsOnSigterm`) needs none of this:
its deletion is its retirement. The Event naming removed pods is posted after
the deletions, for those that happened; a removal called off because the
worker turned busy is counted (PoolState.called_off), and the status says why
the pool cannot shrink."""

from __future__ import annotations

import functools
import logging

from ...contracts import names
from ...contracts.resource import WorkerPool
from ...contracts.wire import WireFormatError
from ...decide.disruption import MarkChange
from ...decide.events import Event, EventReason
from ...decide.pods import PoolRef, render_pod
from ...decide.reasons import DeletionReason
from ...decide.scaling import Deletion, ScalePlan, removal_event
from ...decide.snapshot import snapshot_holds
from ...protocols import protocol_for
from ..ports import ApiError, Commands, KubeApi, api_message, client_error, refused_by_admission
from ..process import metrics
from .api_io import EventEmitter
from .pod_patches import PodPatches
from .state import PoolState

log = logging.getLogger(__name__)

RETIRE_TTL = 120  # s; longer than a pod deletion takes, short enough to undo a lost one
NEXT_HEARTBEAT_SLACK = 2.0  # s beyond one heartbeat interval: a heartbeat later than that is a missed one


class PodActions:
    def __init__(self, kube: KubeApi, state: PoolState, events: EventEmitter, worker_image: str) -> None:
        self.kube, self.state, self.events, self.worker_image = kube, state, events, worker_image
        self.namespace, self.name = events.namespace, events.name
        self.gates_opened: set[str] = set()  # pod uids whose readiness gate this controller opened
        self.patches = PodPatches(state, self.namespace, self.name)  # marks and gates, sent in the background

    async def apply(
        self, pool: WorkerPool, ref: PoolRef, plan: ScalePlan, commands: Commands | None, since: float | None
    ) -> None:
        """The plan's pod changes (its Events are posted by the caller, with the rest of the round's).

        `since`: when the round's first trigger came (the scale-up reaction is measured from it).
        """
        # A confirmation this round's plan no longer asks for (the worker turned busy, the spec
        # changed) is over: a later plan starts it again with a fresh snapshot. One whose worker
        # turned busy is a removal called off (under steady traffic the plan keeps choosing
        # whichever worker is idle at the moment, and each turns busy in turn).
        chosen = {d.name for d in plan.delete}
        for worker_id in [w for w in self.state.confirming if w not in chosen]:
            del self.state.confirming[worker_id]
            tracked = self.state.workers.get(worker_id)
            if tracked is not None and not tracked.info.runs_nothing:
                self.state.called_off.record()
                self._kept(worker_id, "it turned busy before its removal was confirmed")
        if not await self._create(pool, ref, plan.create, since):
            return
        deleted = [d.name for d in plan.delete if await self._delete(pool, d, commands)]
        event = removal_event(plan, deleted)
        if event is not None:
            await self.events.emit(event)

    def confirmation_due(self, pool: WorkerPool) -> float | None:
        """When the earliest confirmation gives up waiting for a report (monotonic), if any."""
        if not self.state.confirming:
            return None
        return min(self.state.confirming.values()) + pool.spec.heartbeat_interval_seconds + NEXT_HEARTBEAT_SLACK

    def mark(self, changes: tuple[MarkChange, ...]) -> None:
        """Hand busy workers' node-autoscaler annotations to the pool's pod patches (after the round's
        pod changes; the round does not wait for them)."""
        for change in changes:
            kind = "mark" if change.mark else "unmark"

            def counted(made: bool, kind: str = kind) -> None:
                if made:
                    metrics.MARK_WRITES.labels(self.namespace, self.name, kind).inc()

            # A removal is sent only if its worker still runs nothing when the write's turn comes
            # (removals wait behind every status write): one that turned busy keeps its mark.
            still = None if change.mark else functools.partial(self._runs_nothing, change.pod)
            send = functools.partial(self.kube.mark_pod, self.namespace, change.pod, change.patch, still)
            self.patches.submit(("mark", change.pod), change.mark, send, counted)

    def _runs_nothing(self, pod: str) -> bool:
        tracked = self.state.workers.get(pod)
        return tracked is not None and tracked.info.runs_nothing

    def open_gates(self, pods: tuple[str, ...], now: str) -> None:
        """Open the readiness gate of pods whose worker has registered (`now`: the RFC 3339 time).

        Once per pod: a kubelet stand-in that rewrites the whole condition list (kwok's) must not
        turn this into a status write every round. A gate whose patch failed is opened again later."""
        self.gates_opened &= {v.uid for v in self.state.pods.values()}
        for pod in pods:
            view = self.state.pods.get(pod)
            if view is None or view.uid in self.gates_opened:
                continue
            self.gates_opened.add(view.uid)
            condition = {
                "type": names.REGISTERED_CONDITION,
                "status": "True",
                "reason": "WorkerRegistered",
                "message": "the pod's worker has registered in Redis and sends heartbeats",
                "lastTransitionTime": now,
            }

            def opened(made: bool, uid: str = view.uid) -> None:
                if not made:
                    self.gates_opened.discard(uid)

            send = functools.partial(self.kube.set_pod_condition, self.namespace, pod, condition)
            self.patches.submit(("gate", pod), view.uid, send, opened)

    async def _create(self, pool: WorkerPool, ref: PoolRef, count: int, since: float | None) -> bool:
        """False when the API server refused a create, now or lately (then nothing more this round)."""
        if count and not self.state.may_create():
            return False  # refused lately: retried after a backoff, or at once when the spec changes
        for done in range(count):
            try:
                created = await self.kube.create_pod(self.namespace, render_pod(ref, pool.spec, self.worker_image))
            except ApiError as exc:
                if refused_by_admission(exc):
                    message = f"pod creation rejected ({exc.status}): {api_message(exc)}"
                    if self.state.create_rejected(message):
                        await self.events.emit(Event("Warning", EventReason.POD_CREATE_REJECTED, message))
                    return False
                raise
            self.state.created(created)
            metrics.SCALE_EVENTS.labels(self.namespace, self.name, "create").inc()
            if done == 0 and since is not None:
                reaction = self.state.clock.monotonic() - since
                metrics.SCALE_UP_REACTION.labels(self.namespace, self.name).observe(reaction)
        return True

    async def _delete(self, pool: WorkerPool, deletion: Deletion, commands: Commands | None) -> bool:
        """True: the pod was deleted."""
        retired = deletion.reason != DeletionReason.REPLACE_FAILED
        if retired and not await self._retire(pool, deletion.name, commands):
            return False
        try:
            await self.kube.delete_pod(self.namespace, deletion.name, deletion.uid)
        except ApiError as exc:
            if retired and commands is not None and commands.has_handshake and client_error(exc):
                # Refused, so the pod stays: its worker may claim again at once, not when
                # the mark expires. (A 5xx may have deleted it after all: the mark stays.)
                await commands.unretire(deletion.name, pool.spec.redis.queue_key)
            raise
        self.state.deleted(deletion.uid)
        metrics.SCALE_EVENTS.labels(self.namespace, self.name, "delete").inc()
        return True

    async def _retire(self, pool: WorkerPool, worker_id: str, commands: Commands | None) -> bool:
        """Atomically in Redis: stop the worker claiming, and confirm it holds nothing.

        The heartbeat that showed it idle may be up to a coalescing window old; this
        closes the race with a claim made since. A worker that is busy after all is
        kept (and claims again when the retiring mark expires).
        """
        if commands is None:
            return False
        if pool.spec.drains_on_sigterm:
            return True  # SIGTERM is its retire signal: it takes no delivery and finishes what it holds
        if not commands.has_handshake:
            return await self._still_idle(pool, worker_id, commands)
        if await commands.retire(worker_id, pool.spec.redis.queue_key, RETIRE_TTL):
            return True
        self.state.called_off.record()
        log.info("%s/%s: %s turned busy before its pod was deleted: kept", self.namespace, self.name, worker_id)
        return False

    async def _still_idle(self, pool: WorkerPool, worker_id: str, commands: Commands) -> bool:
        """No handshake: its snapshot read now, then a report newer than that, must show it runs
        nothing. True: delete now; False: not now (kept, or its next report is awaited by a later round)."""
        since = self.state.confirming.get(worker_id)
        if since is None:
            return await self._snapshot_idle(pool, worker_id, commands)
        interval = pool.spec.heartbeat_interval_seconds
        tracked = self.state.workers.get(worker_id)
        if tracked is None:  # it said it went offline (or its pod is gone): nothing runs there
            del self.state.confirming[worker_id]
            return True
        if tracked.last_seen > since:
            del self.state.confirming[worker_id]
            if not tracked.info.runs_nothing:
                self.state.called_off.record()
                return self._kept(
                    worker_id, f"its next heartbeat shows {', '.join(tracked.info.running[:3]) or 'it busy'}"
                )
            return True  # idle by the report it just sent: delete now
        if self.state.clock.monotonic() - since > interval + NEXT_HEARTBEAT_SLACK:
            del self.state.confirming[worker_id]
            return self._kept(worker_id, f"no heartbeat within {interval + NEXT_HEARTBEAT_SLACK:.0f} s")
        return False  # its next report has not come yet

    async def _snapshot_idle(self, pool: WorkerPool, worker_id: str, commands: Commands) -> bool:
        """The first check: its heartbeat snapshot, read now. Idle by it: confirming from now on."""
        window = protocol_for(pool.spec.protocol).fresh_window(pool.spec.heartbeat_interval_seconds)
        read_at = self.state.clock.monotonic()  # before the read: no report slips between
        try:
            report = await commands.report(worker_id)
        except WireFormatError as exc:
            return self._kept(worker_id, f"its snapshot is unreadable: {exc}")
        held, why = snapshot_holds(report, self.state.clock.time(), window)
        if held is None or held:
            return self._kept(worker_id, why or f"running {', '.join((held or [])[:3])}")
        if report is None:
            return True  # no registration and no snapshot: nothing to wait for
        self.state.confirming[worker_id] = read_at
        return False

    def _kept(self, worker_id: str, why: str) -> bool:
        log.info("%s/%s: %s kept: %s", self.namespace, self.name, worker_id, why)
        metrics.DELETES_AVERTED.labels(self.namespace, self.name).inc()
        return False
