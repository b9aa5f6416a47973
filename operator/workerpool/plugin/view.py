"""What `kubectl workerpool` prints, from WorkerPool objects as the API returns them (pure: no I/O).

`top` shows one row per process (the seed's GET /workers, flattened) under a
header line per pool; `-o json|yaml` gives the seed's WorkerDetail list exactly
(snake_case). Values come from the status the operator copies from the
workers' heartbeats, so they are as fresh as the pool's last status write;
given the time now, ELAPSED is counted from each execution's own start and an
idle worker's UPTIME from the worker's (the status refreshes those gauges only
every 30 s, and a worker without processes has no uptime of its own to show).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..contracts.resource import LastRecycle, WorkerDetail, WorkerPoolStatus
from ..contracts.wire import QueueStatus, to_wire

COLUMNS = ("WORKER", "PID", "STATE", "MEMORY(MB)", "UPTIME", "COMPLETED", "EXECUTION", "ELAPSED")


class UnreadableStatus(Exception):
    """The pool's status does not parse (written by something else than this operator's version)."""


@dataclass(frozen=True)
class Pool:
    namespace: str
    name: str
    spec: Mapping[str, Any]
    status: WorkerPoolStatus

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Pool:
        meta = obj.get("metadata") or {}
        try:
            status = WorkerPoolStatus.model_validate(obj.get("status") or {})
        except ValidationError as exc:
            raise UnreadableStatus(f"{meta.get('namespace')}/{meta.get('name')}: unreadable status: {exc}") from None
        return cls(str(meta.get("namespace", "")), str(meta.get("name", "")), obj.get("spec") or {}, status)

    @property
    def workers(self) -> list[WorkerDetail]:
        return list(self.status.worker_details or [])


def duration(seconds: float) -> str:
    """kubectl's short age format: 45s, 3m12s, 2h5m, 3d4h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def header(pool: Pool) -> str:
    st, spec = pool.status, pool.spec
    queue = st.queue.depth if st.queue is not None else "?"
    omitted = f" (+{st.worker_details_omitted} workers not listed)" if st.worker_details_omitted else ""
    return (
        f"{pool.namespace}/{pool.name}: min {spec.get('minWorkers', '?')} max {spec.get('maxWorkers', '?')}"
        f" desired {_n(st.desired_workers)} workers {_n(st.workers)} busy {_n(st.busy_count)}"
        f" idle {_n(st.idle_count)} queue {queue} ready {_n(st.ready_workers)}{omitted}"
    )


def _since(start: dt.datetime | None, stored: float, now: dt.datetime | None) -> float:
    """Seconds since `start` as of `now` (never less than what the heartbeat said)."""
    if start is None or now is None:
        return stored
    return max(stored, (now - start).total_seconds())


def process_rows(pool: Pool, now: dt.datetime | None = None) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for worker in sorted(pool.workers, key=lambda w: w.worker_id):
        for proc in sorted(worker.processes, key=lambda p: p.pid):
            execution = proc.execution
            rows.append(
                (
                    worker.worker_id,
                    str(proc.pid),
                    proc.state,
                    f"{proc.memory_mb:.0f}",
                    duration(proc.uptime_seconds),
                    str(proc.executions_completed),
                    execution.execution_id if execution else "-",
                    duration(_since(execution.started_at, execution.elapsed_seconds, now)) if execution else "-",
                )
            )
        if not worker.processes:
            # No process at all: starting, or (a worker that starts one per execution) idle with free slots.
            state = f"idle ({worker.idle_count} free)" if worker.idle_count else "starting"
            uptime = duration(_since(worker.started_at, 0.0, now)) if now is not None else "-"
            rows.append((worker.worker_id, "-", state, "-", uptime, "-", "-", "-"))
    return rows


def table(rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in (columns, *rows)]
    return "\n".join(lines)


def render_top(pools: Iterable[Pool], now: dt.datetime | None = None) -> str:
    blocks = []
    for pool in pools:
        rows = process_rows(pool, now)
        body = table(rows) if rows else "(no live workers reported)"
        blocks.append(f"{header(pool)}\n{body}")
    return "\n\n".join(blocks) if blocks else "No WorkerPools found."


def workers_document(pools: Iterable[Pool]) -> list[dict[str, Any]]:
    """The seed's GET /workers answer: WorkerDetail objects, snake_case, across the pools."""
    return [to_wire(w) for pool in pools for w in pool.workers]


def queue_document(pool: Pool) -> dict[str, Any]:
    """The seed's GET /queue answer (QueueStatus); an empty queue before the first reading."""
    return to_wire(pool.status.queue or QueueStatus())


def recycle_request(targets: Sequence[str], every: bool, token: str) -> str:
    """The annotation value: the targets (or `*`), with a fresh `@token` so it is a new request."""
    return f"{'*' if every else ','.join(targets)}@{token}"


def recycle_outcome(pool: Pool, request: str) -> LastRecycle | None:
    """The operator's record of `request`, once the status shows it."""
    last = pool.status.last_recycle
    return last if last is not None and last.request == request else None


def outcome_lines(record: LastRecycle) -> list[str]:
    lines = []
    for r in record.results:
        target = f"{r.worker_id}:{r.pid}" if r.pid is not None else r.worker_id
        reason = f": {r.reason}" if r.reason else ""
        lines.append(f"{target}\t{r.status}{reason}")
    return lines or ["(no targets)"]


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)
