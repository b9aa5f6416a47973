"""What the operator knows of a pool's workers, and how a resync from the
workers' keys in Redis repairs it (pure: times are passed in)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..contracts.report import WorkerReport


@dataclass(frozen=True)
class Tracked:
    info: WorkerReport
    last_seen: float  # monotonic time the operator last saw a newer report
    reported_at: dt.datetime | None


def shape(info: WorkerReport) -> tuple[Any, ...]:
    """What makes a report significant: process ids, states, executions, counts (not gauges)."""
    return (
        info.pool_size,
        info.idle_count,
        info.busy_count,
        info.complete,
        tuple((p.pid, p.state, p.execution.execution_id if p.execution else None) for p in info.processes),
    )


def merge_resync(
    known: Mapping[str, Tracked],
    present: set[str],
    reread: Mapping[str, WorkerReport],
    now_mono: float,
    now_wall: float,
) -> tuple[dict[str, Tracked], bool]:
    """The workers after a resync, and whether anything significant changed.

    `present`: every registered worker of the pool; `reread`: the reports read
    again from Redis (the others were heard by pub/sub lately and are kept). A
    worker no longer present is dropped; a re-read report replaces what is
    known only if it is newer (pub/sub may have delivered a later one meanwhile).
    """
    changed = set(known) != present
    merged: dict[str, Tracked] = {}
    for worker_id in present:
        before = known.get(worker_id)
        reg = reread.get(worker_id)
        if reg is None:
            if before is not None:
                merged[worker_id] = before  # heard by pub/sub lately: nothing to repair
            continue
        newer = before is None or (
            reg.reported_at is not None and before.reported_at is not None and reg.reported_at > before.reported_at
        )
        if not newer:
            assert before is not None
            merged[worker_id] = before
            continue
        seen = now_mono
        if before is None and reg.reported_at is not None:
            # First sight (e.g. after an operator restart): as fresh as its heartbeat.
            seen = now_mono - max(0.0, now_wall - reg.reported_at.timestamp())
        merged[worker_id] = Tracked(reg, seen, reg.reported_at)
        changed = changed or before is None or shape(before.info) != shape(reg)
    return merged, changed
