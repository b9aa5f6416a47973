"""The `bifrost.dev/recycle` annotation (DESIGN §4): grammar and target resolution.

    <request> := <targets> [ "@" <token> ]
    <targets> := <target> { "," <target> }
    <target>  := "*" | <worker-id> | <worker-id> ":" <pid>

`pool-x7k2p` recycles any idle process of that worker (pid null),
`pool-x7k2p:4711` that process, `*` every worker of the pool (pid null).
The optional `@token` only makes an identical request a distinct value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..contracts import names
from ..contracts.resource import LastRecycle, RecycleResult
from .events import Event, EventReason
from .observation import WorkerView

# Pod names are DNS-1123 subdomains.
_WORKER_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_PID = re.compile(r"^[1-9][0-9]{0,9}$")
# A request names a few targets ("*", or worker[:pid] items of about 30 characters): the
# value is kept in status.lastRecycle and the dedupe record, so it is bounded.
MAX_REQUEST_LENGTH = 1024
# lastRecycle.results lists this many targets at most ("*" over 10,000 workers would be a
# megabyte); resultsOmitted counts the rest. The Events name fewer still.
MAX_RECORDED_RESULTS = 100
EVENT_TARGETS = 10


class RecycleRequestError(ValueError):
    """A malformed annotation value; the message says what is wrong."""


@dataclass(frozen=True)
class Target:
    worker_id: str  # "*" = every worker of the pool
    pid: int | None = None


@dataclass(frozen=True)
class RecycleRequest:
    raw: str
    targets: tuple[Target, ...]
    token: str | None = None


def parse_request(raw: str) -> RecycleRequest:
    """Parse an annotation value; raises RecycleRequestError (never anything else)."""
    if len(raw) > MAX_REQUEST_LENGTH:
        raise RecycleRequestError(f"value is longer than {MAX_REQUEST_LENGTH} characters")
    body, at, token = raw.strip().rpartition("@")
    if not at:
        body, token = token, ""
    elif not token.strip():
        raise RecycleRequestError("'@' must be followed by a token")
    parts = [p.strip() for p in body.split(",")]
    if not body.strip() or any(not p for p in parts):
        raise RecycleRequestError("expected a comma-separated list of targets (worker, worker:pid or *)")
    targets: list[Target] = []
    for part in parts:
        if part == "*":
            targets.append(Target("*"))
            continue
        worker, colon, pid = part.partition(":")
        if not _WORKER_ID.match(worker):
            raise RecycleRequestError(f"{part!r}: {worker!r} is not a worker name (a pod name)")
        if colon and not _PID.match(pid):
            raise RecycleRequestError(f"{part!r}: {pid!r} is not a process id (a positive integer)")
        targets.append(Target(worker, int(pid) if colon else None))
    return RecycleRequest(raw=raw, targets=tuple(targets), token=token.strip() or None)


@dataclass(frozen=True)
class Command:
    worker_id: str
    pid: int | None


# Bifrost's recycle reinstalls packages and restarts its process pool, killing what
# runs after 60 s (measured: notes/bifrost-wire.md), whatever pid is named.
KILLS_RUNNING = "Bifrost's recycle restarts the worker and kills running executions"


def resolve(
    request: RecycleRequest, live: Mapping[str, WorkerView], kills_running: bool = False
) -> tuple[list[Command], list[RecycleResult]]:
    """Commands to publish and the per-target results, for the live workers of this pool.

    `live` maps worker id -> its last report. A target that is not a live worker of
    this pool, or a pid that worker does not have, is rejected; nothing is published for it.
    `kills_running`: the worker's recycle kills what runs (Bifrost's): a target is then
    sent one only when a fresh heartbeat shows it runs nothing, and any pid is taken
    as named (such a worker has no idle processes to list).
    """
    out = _Resolution(live, kills_running)
    for target in request.targets:
        if target.worker_id == "*":
            if not live:
                out.reject("*", None, "the pool has no live workers")
            for worker_id in sorted(live):
                out.target(worker_id, None)
        elif target.worker_id not in live:
            out.reject(
                target.worker_id,
                target.pid,
                "not a live worker of this pool (no such pod, or no current registration)",
            )
        else:
            out.target(target.worker_id, target.pid)
    return out.commands, out.results


class _Resolution:
    """The commands and results of one request, built target by target."""

    def __init__(self, live: Mapping[str, WorkerView], kills_running: bool) -> None:
        self.live, self.kills_running = live, kills_running
        self.commands: list[Command] = []
        self.results: list[RecycleResult] = []
        self.seen: set[tuple[str, int | None]] = set()

    def add(self, worker_id: str, pid: int | None, reason: str = "") -> None:
        if (worker_id, pid) in self.seen:
            return
        self.seen.add((worker_id, pid))
        self.commands.append(Command(worker_id, pid))
        self.results.append(RecycleResult(worker_id=worker_id, pid=pid, status="recycle_requested", reason=reason))

    def reject(self, worker_id: str, pid: int | None, reason: str) -> None:
        self.results.append(RecycleResult(worker_id=worker_id, pid=pid, status="rejected", reason=reason))

    def target(self, worker_id: str, pid: int | None) -> None:
        """A live worker of the pool (pid None: any process, or all)."""
        view = self.live[worker_id]
        if self.kills_running:
            self._only_if_it_runs_nothing(worker_id, pid, view)
        elif pid is None:
            self.add(worker_id, None)
        else:
            process = next((p for p in view.info.processes if p.pid == pid), None)
            if process is None:
                self.reject(worker_id, pid, f"worker {worker_id} has no process with pid {pid}")
                return
            reason = ""
            if process.state == "busy":
                reason = (
                    "busy at the last heartbeat: the worker recycles it only if it is idle when the command arrives"
                )
            self.add(worker_id, pid, reason)

    def _only_if_it_runs_nothing(self, worker_id: str, pid: int | None, view: WorkerView) -> None:
        if not view.fresh:
            self.reject(worker_id, pid, f"{KILLS_RUNNING}; no fresh heartbeat shows that it runs nothing")
        elif not view.info.runs_nothing:
            running = ", ".join(view.info.running[:3]) or f"{view.info.busy_count} busy"
            self.reject(worker_id, pid, f"{KILLS_RUNNING}: it is running {running}")
        else:
            self.add(worker_id, pid)


@dataclass(frozen=True)
class RecycleDecision:
    """What to do with one annotation value: its record for `status.lastRecycle`,
    and the commands to publish (None: rejected before anything reaches Redis)."""

    value: str
    record: LastRecycle
    publish: tuple[Command, ...] | None
    dedupe_key: str
    results: tuple[RecycleResult, ...] = ()  # every target's (the record keeps the first ones)


def dedupe_key(pool_uid: str, value: str) -> str:
    """The Redis key that makes one annotation value publish once, also across restarts."""
    return f"bifrost:operator:recycle:{pool_uid}:{hashlib.sha256(value.encode()).hexdigest()[:24]}"


def decide_recycle(
    value: str, pool_uid: str, live: Mapping[str, WorkerView], now: dt.datetime, kills_running: bool = False
) -> RecycleDecision:
    key = dedupe_key(pool_uid, value)
    try:
        request = parse_request(value)
    except RecycleRequestError as exc:
        rejected = RecycleResult(worker_id="", pid=None, status="rejected", reason=f"malformed request: {exc}")
        return RecycleDecision(value, _record(value, now, [rejected]), None, key, (rejected,))
    commands, results = resolve(request, live, kills_running)
    return RecycleDecision(value, _record(value, now, results), tuple(commands), key, tuple(results))


def _record(value: str, now: dt.datetime, results: list[RecycleResult]) -> LastRecycle:
    """The record, bounded: the request as given (cut if it was refused for its length), and at
    most MAX_RECORDED_RESULTS results (the rest counted)."""
    omitted = max(0, len(results) - MAX_RECORDED_RESULTS)
    return LastRecycle(
        request=value[:MAX_REQUEST_LENGTH],
        handled_at=now,
        results=results[:MAX_RECORDED_RESULTS],
        results_omitted=omitted or None,
    )


def recycle_events(decision: RecycleDecision) -> list[Event]:
    """The Events that tell a handled request's outcome (once, when it is first handled): at most
    one RecycleRequested and one RecycleRejected, each naming a few targets and counting the rest."""
    value = decision.value[:120] + ("..." if len(decision.value) > 120 else "")
    results = decision.results or tuple(decision.record.results)
    if decision.publish is None:
        return [
            Event("Warning", EventReason.RECYCLE_REJECTED, f"{names.RECYCLE_ANNOTATION}={value!r}: {results[0].reason}")
        ]
    events = []
    requested = [_target(r) for r in results if r.status == "recycle_requested"]
    if requested:
        events.append(
            Event(
                "Normal", EventReason.RECYCLE_REQUESTED, f"recycle published for {_some(requested)} (request {value!r})"
            )
        )
    rejected = [f"{_target(r)}: {r.reason}" for r in results if r.status == "rejected"]
    if rejected:
        events.append(Event("Warning", EventReason.RECYCLE_REJECTED, f"{_some(rejected, 3, '; ')} (request {value!r})"))
    return events


def _some(items: list[str], shown: int = EVENT_TARGETS, sep: str = ", ") -> str:
    more = len(items) - shown
    return sep.join(items[:shown]) + (f"{sep}and {more} more" if more > 0 else "")


def _target(result: RecycleResult) -> str:
    return result.worker_id + (f":{result.pid}" if result.pid else "")
