"""What one pool controller knows between reconciles (the "gather" side): its pods
from the watch, its workers from heartbeats and resyncs, the pods it is
deleting. Inputs arrive from Kopf handlers and the Redis hub and never block;
`observe()` turns the lot into the plain Observation that decisions read."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ...contracts.report import WorkerReport
from ...contracts.wire import QueueStatus
from ...decide.observation import Observation, PodView, WorkerView
from ...decide.resync import Tracked, merge_resync, shape
from ..process.clock import Clock

DELETING_TIMEOUT = 120.0
# A refused pod create is tried again after this, doubled per refusal in a row, up to the cap.
CREATE_BACKOFF, CREATE_BACKOFF_CAP = 10.0, 300.0
# Removals called off within this window (s) count; a few are remembered (the status shows 3).
CALLED_OFF_WINDOW, CALLED_OFF_KEPT = 600.0, 16


def pod_view(body: dict[str, Any], now: float) -> PodView:
    created = body["metadata"].get("creationTimestamp")
    at = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() if created else now
    return PodView.from_body(body, at)


class CalledOff:
    """Removals called off in a row because the chosen worker turned busy first: under steady
    round-robin delivery a worker that kills on SIGTERM is never idle long enough, and the
    status says so. A deletion that goes through clears them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.times: deque[float] = deque(maxlen=CALLED_OFF_KEPT)  # monotonic

    def record(self) -> None:
        self.times.append(self.clock.monotonic())

    def recent(self) -> int:
        """Within the last CALLED_OFF_WINDOW seconds."""
        since = self.clock.monotonic() - CALLED_OFF_WINDOW
        return sum(1 for t in self.times if t > since)


class PoolState:
    def __init__(
        self, uid: str, poke: Callable[[], None], clock: Clock, cold_start: Callable[[float], None] = lambda s: None
    ) -> None:
        self.uid = uid
        self.poke = poke
        self.clock = clock
        # Pods this controller created whose worker has not reported yet (name -> when):
        # the cold start ends at the first report.
        self.starting: dict[str, float] = {}
        self.cold_start = cold_start
        # Only what decisions read of each pod (a whole pod body is ~100x larger: at
        # 1000 pods that difference is most of the operator's memory).
        self.pods: dict[str, PodView] = {}
        self.pods_synced = False
        # Pods this controller deleted (uid -> until when), terminating even if a
        # stale watch event still shows them running.
        self.deleting: dict[str, float] = {}
        self.workers: dict[str, Tracked] = {}
        # Workers that said they went offline (id -> epoch seconds): reports older than
        # that (a heartbeat snapshot left to expire) do not bring them back.
        self.offline: dict[str, float] = {}
        # Deletions of workers without the retire handshake whose snapshot showed them idle, waiting
        # for a report newer than that (worker id -> when the snapshot was read, monotonic): a later
        # round deletes or keeps them by it; no round ever waits for one.
        self.confirming: dict[str, float] = {}
        # Until the first resync from Redis, the worker map is empty for lack of
        # data, not because the pool has no workers: no status write before it
        # (an operator restart must not flap the status to zero workers).
        self.resynced = False
        # The API server's refusal of our last create (admission, an invalid template):
        # the pool is Stalled with it until a create succeeds or the spec changes.
        self.create_error: str | None = None
        # After a refused create: no create before this (monotonic), backing off per refusal in
        # a row, until a create succeeds or the spec changes (a refusal is rarely fixed by retrying).
        self.create_retry_at: float | None = None
        self._create_refusals = 0
        self.called_off = CalledOff(clock)

    # --- inputs -------------------------------------------------------------------------

    def on_pod(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if event_type == "DELETED":
            self.pods.pop(name, None)
            self.workers.pop(name, None)
            self.starting.pop(name, None)
            self.offline.pop(name, None)
        else:
            self.pods[name] = pod_view(body, self.clock.time())
        self.poke()

    def sync_pods(self, bodies: Iterable[dict[str, Any]]) -> None:
        """The first list of the pool's pods (the watch cache may not be complete yet)."""
        for body in bodies:
            self.pods.setdefault(body["metadata"]["name"], pod_view(body, self.clock.time()))
        self.pods_synced = True

    def created(self, body: dict[str, Any]) -> None:
        """In the cache at once (the watch event may come before or after): never created twice."""
        self.pods[body["metadata"]["name"]] = pod_view(body, self.clock.time())
        self.starting[body["metadata"]["name"]] = self.clock.monotonic()
        self._create_refusals, self.create_retry_at = 0, None
        self._set_create_error(None)

    def patched(self, body: dict[str, Any]) -> None:
        """A pod this controller patched, as the API server returned it (the watch event may lag)."""
        name = body["metadata"]["name"]
        if name in self.pods:
            self.pods[name] = pod_view(body, self.clock.time())

    def create_rejected(self, message: str) -> bool:
        """Record a refused create; whether its message is new (then it is told, once)."""
        self._create_refusals += 1
        delay = min(CREATE_BACKOFF_CAP, CREATE_BACKOFF * 2 ** (self._create_refusals - 1))
        self.create_retry_at = self.clock.monotonic() + delay
        new = message != self.create_error
        self._set_create_error(message)
        return new

    def may_create(self) -> bool:
        return self.create_retry_at is None or self.clock.monotonic() >= self.create_retry_at

    def spec_changed(self) -> None:
        self._create_refusals, self.create_retry_at = 0, None
        self._set_create_error(None)  # a new spec may well be accepted

    def _set_create_error(self, message: str | None) -> None:
        if message != self.create_error:
            self.create_error = message
            self.poke()  # the next round reports it (or its end) in the status

    def deleted(self, uid: str) -> None:
        self.deleting[uid] = self.clock.monotonic() + DELETING_TIMEOUT
        self.called_off.times.clear()

    def owns(self, worker_id: str) -> bool:
        """Is this worker one of this pool's pods (by name, and by the pool's uid in its owners)?"""
        view = self.pods.get(worker_id)
        return view is not None and self._is_ours(view)

    def _is_ours(self, view: PodView) -> bool:
        # A same-named pool's leftover, or a pod someone else labelled, is not.
        return not self.uid or self.uid in view.owners

    def on_heartbeat(self, report: WorkerReport) -> None:
        worker_id, at = report.worker_id, report.reported_at
        before = self.workers.get(worker_id)
        if before is not None and before.reported_at is not None and at is not None and at < before.reported_at:
            return  # an older heartbeat overtaken by a resync
        if self._went_offline(report):
            return
        self.workers[worker_id] = Tracked(report, self.clock.monotonic(), at)
        self._reported(worker_id)
        if before is None or shape(before.info) != shape(report) or worker_id in self.confirming:
            self.poke()

    def on_offline(self, worker_id: str) -> None:
        """The worker said it stopped: no worker from now on (not after its fresh window)."""
        self.offline[worker_id] = self.clock.time()
        if self.workers.pop(worker_id, None) is not None or worker_id in self.confirming:
            self.poke()

    def _went_offline(self, report: WorkerReport) -> bool:
        """A report from before the worker said it went offline (a newer one: it is back)."""
        gone = self.offline.get(report.worker_id)
        if gone is None:
            return False
        if report.reported_at is not None and report.reported_at.timestamp() > gone:
            del self.offline[report.worker_id]
            return False
        return True

    def on_queue(self, status: QueueStatus) -> None:
        self.poke()  # the hub keeps the reading; the next round reads it from there

    def on_health(self) -> None:
        self.poke()

    def on_resync(self, present: set[str], regs: dict[str, WorkerReport]) -> None:
        """`present`: every registered worker of this pool; `regs`: the reports re-read from Redis."""
        if self.offline:
            self.offline = {w: t for w, t in self.offline.items() if w in self.pods}
            regs = {w: r for w, r in regs.items() if not self._went_offline(r)}
            present = {w for w in present if w not in self.offline or w in regs}
        self.workers, changed = merge_resync(self.workers, present, regs, self.clock.monotonic(), self.clock.time())
        for worker_id in present & self.starting.keys():
            self._reported(worker_id)
        changed = changed or not self.resynced
        self.resynced = True
        if changed:
            self.poke()

    def _reported(self, worker_id: str) -> None:
        # On every heartbeat: most find nothing starting, so the empty check comes first.
        started = self.starting.pop(worker_id, None) if self.starting else None
        if started is not None:
            self.cold_start(self.clock.monotonic() - started)

    # --- the observation ----------------------------------------------------------------------

    def observe(
        self,
        window: float,
        queue: QueueStatus | None,
        redis_error: str | None,
        demand_error: str | None = None,
        leaving_is_gone: bool = True,
    ) -> Observation:
        """`window`: the protocol's fresh window; `redis_error`: why reports cannot be trusted;
        `demand_error`: why the queue could not be read (the reports are still shown);
        `leaving_is_gone`: a pod whose eviction is held counts as gone (its worker was retired
        and takes no work: the replacement is made now). False for a worker without the retire
        handshake: it still takes work, so it counts until its pod goes, and then it is replaced."""
        now_mono, now = self.clock.monotonic(), self.clock.time()
        self.deleting = {uid: t for uid, t in self.deleting.items() if t > now_mono}
        pods = []
        for view in self.pods.values():
            if not self._is_ours(view):
                continue
            if not view.terminating and (view.uid in self.deleting or (leaving_is_gone and view.leaving(now))):
                view = dataclasses.replace(view, terminating=True)  # going: counted as gone
            pods.append(view)
        left = {wid: window - (now_mono - t.last_seen) for wid, t in self.workers.items() if wid in self.pods}
        trusted = redis_error is None
        workers = {
            wid: WorkerView(self.workers[wid].info, fresh=trusted and s > 0 and self.workers[wid].info.complete)
            for wid, s in left.items()
        }
        fresh = [s for wid, s in left.items() if workers[wid].fresh]
        return Observation(
            pods=tuple(pods),
            workers=workers,
            queue=queue,
            redis_error=redis_error,
            demand_error=demand_error,
            now=now,
            stale_in=min(fresh) if fresh else None,
        )
