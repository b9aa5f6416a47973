"""For a worker without a retire handshake (Bifrost's): what its heartbeat snapshot,
read from Redis just now, says it runs. This is the last check before its pod is
deleted (scale-down, template change) and the answer to an eviction.

The snapshot is rewritten every heartbeat interval and lives 60 s, so a worker that
runs anything has one. What this cannot close: an execution delivered to the worker
after the snapshot was written and before the pod is deleted (at most one heartbeat
interval; `heartbeatIntervalSeconds` narrows it; docs/bifrost.md measures it).
"""

from __future__ import annotations

from ..contracts.report import WorkerReport


def snapshot_holds(report: WorkerReport | None, now: float, window: float) -> tuple[list[str] | None, str]:
    """(what the worker runs: [] nothing, None unknown; why, when unknown).

    `now`: epoch seconds; `window`: the fresh window in seconds.
    """
    if report is None:
        return [], ""  # no registration and no snapshot: a worker that runs nothing (or never started)
    if not report.complete or report.reported_at is None:
        return None, "no heartbeat snapshot, only a registration"
    age = now - report.reported_at.timestamp()
    if age > window:
        return None, f"its last heartbeat is {age:.0f} s old"
    if report.runs_nothing:
        return [], ""
    running = list(report.running)
    return running or [f"{report.busy_count} busy process(es)"], ""
