"""`workerDetails` within a byte budget, so the status always fits in one object.

etcd refuses a request over 1.5 MiB, and 50 busy workers at `processes.max: 128`
rendered 1.68 MiB: every status write failed. The details are cut, cheapest
information first, until their estimated JSON fits the budget: first the process
lists of workers that run nothing (their counts say the same), then the largest
remaining process lists, then whole workers from the end. The sums (poolSize,
busyCount, ...) always count every worker; `workerDetailsOmitted` and
`processDetailsOmitted` say what was cut.

The size is estimated, not serialized (this runs on every status render): an upper
bound of the JSON (fixed bytes per object for keys and numbers, plus its strings;
tests/unit/test_detail_budget.py checks it against the real rendering).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..contracts.resource import ProcessDetail, WorkerDetail

DETAIL_BUDGET_BYTES = 512 * 1024  # a third of etcd's limit, for all of workerDetails
# Keys, punctuation and numbers of one object, at most (numbers are bounded by the wire:
# 2^53 is 16 digits, a float's repr 24 characters, a timestamp 32).
WORKER_BYTES = 330
PROCESS_BYTES = 200
EXECUTION_BYTES = 120


def text_bytes(s: str) -> int:
    """A string's bytes in JSON as the API client sends it (ensure_ascii: a character outside
    ASCII is 6 or 12 bytes). Printable ASCII, what ids and hostnames are, is counted without
    encoding it."""
    if s.isascii() and s.isprintable():
        return len(s) + s.count('"') + s.count("\\")
    return len(json.dumps(s)) - 2


def process_bytes(p: ProcessDetail) -> int:
    size = PROCESS_BYTES + text_bytes(p.process_id) + len(p.state)
    if p.execution is not None:
        size += EXECUTION_BYTES + text_bytes(p.execution.execution_id)
    return size


def worker_bytes(d: WorkerDetail, with_processes: bool = True) -> int:
    size = WORKER_BYTES + text_bytes(d.worker_id) + text_bytes(d.hostname)
    return size + (sum(process_bytes(p) for p in d.processes) if with_processes else 0)


@dataclass(frozen=True)
class Budgeted:
    details: list[WorkerDetail]
    workers_omitted: int  # workers left out entirely
    processes_omitted: int  # workers shown without their process list


def within_budget(details: list[WorkerDetail], budget: int = DETAIL_BUDGET_BYTES) -> Budgeted:
    """`details` cut to fit `budget` bytes (see the module docstring for the order)."""
    sizes = [worker_bytes(d) for d in details]
    total = sum(sizes)
    if total <= budget:
        return Budgeted(details, 0, 0)
    out = list(details)
    stripped = 0
    # Idle first, then the largest lists: each cut saves what that worker's processes cost.
    order = sorted(range(len(out)), key=lambda i: (out[i].busy_count > 0, -sizes[i]))
    for i in order:
        if total <= budget:
            break
        if out[i].processes:
            total -= sizes[i] - worker_bytes(out[i], with_processes=False)
            out[i] = replace_processes(out[i])
            stripped += 1
    kept = len(out)
    while total > budget and kept > 0:
        kept -= 1
        total -= worker_bytes(out[kept])
        if out[kept].processes != details[kept].processes:
            stripped -= 1  # shown without its processes no more: not shown at all
    return Budgeted(out[:kept], len(out) - kept, stripped)


def replace_processes(d: WorkerDetail) -> WorkerDetail:
    """The worker's summary: its counts, no process list (built without validation, like the rest)."""
    return d.model_copy(update={"processes": []})
