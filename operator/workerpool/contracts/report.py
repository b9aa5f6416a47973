"""The one worker report the operator reasons about, whatever wire its worker speaks.

Each protocol (`workerpool.protocols`) parses its own registrations and
heartbeats into a `WorkerReport`; `decide/` and the pool loop see nothing else.
A report is plain, frozen data (no validation: the protocol validated its wire
before building one).

Where "workers" means two things: on the seed's wire `min_workers` /
`max_workers` are a worker's *process* bounds, while the WorkerPool spec's
`minWorkers` / `maxWorkers` count *pods*. Here they are `min_processes` /
`max_processes`; `workerDetails` in the status renders them back as the seed's
`minWorkers` / `maxWorkers` (DESIGN §3), and that rendering is the one place
the two meanings meet.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

ProcessState = Literal["idle", "busy", "killed"]
PROCESS_STATES: tuple[ProcessState, ...] = ("idle", "busy", "killed")


@dataclass(frozen=True)
class ExecutionReport:
    execution_id: str
    started_at: dt.datetime
    elapsed_seconds: float


@dataclass(frozen=True)
class ProcessReport:
    pid: int
    process_id: str
    state: ProcessState
    memory_mb: float
    uptime_seconds: float
    executions_completed: int
    execution: ExecutionReport | None = None  # a killed process may still carry the one it is being killed in


class _WireExecution(Protocol):
    @property
    def execution_id(self) -> str: ...
    @property
    def started_at(self) -> dt.datetime: ...
    @property
    def elapsed_seconds(self) -> float: ...


class _WireProcess(Protocol):
    """A process entry as a protocol's wire model has it (the seed's and Bifrost's share these names)."""

    @property
    def pid(self) -> int: ...
    @property
    def process_id(self) -> str: ...
    @property
    def state(self) -> ProcessState: ...
    @property
    def memory_mb(self) -> float: ...
    @property
    def uptime_seconds(self) -> float: ...
    @property
    def executions_completed(self) -> int: ...
    @property
    def execution(self) -> _WireExecution | None: ...


def process_report(p: _WireProcess) -> ProcessReport:
    """A validated wire process entry as a report."""
    e = p.execution
    return ProcessReport(
        pid=p.pid,
        process_id=p.process_id,
        state=p.state,
        memory_mb=p.memory_mb,
        uptime_seconds=p.uptime_seconds,
        executions_completed=p.executions_completed,
        execution=ExecutionReport(e.execution_id, e.started_at, e.elapsed_seconds) if e is not None else None,
    )


@dataclass(frozen=True)
class WorkerReport:
    worker_id: str
    started_at: dt.datetime
    hostname: str
    pool_size: int
    idle_count: int
    busy_count: int
    processes: tuple[ProcessReport, ...] = ()
    # The worker's process bounds when its wire sends them (the seed's does; Bifrost's does not).
    min_processes: int | None = None
    max_processes: int | None = None
    # Which pool the worker says it is in (the seed's reference worker says; Bifrost's does not).
    pool: str | None = None
    namespace: str | None = None
    reported_at: dt.datetime | None = None  # the heartbeat's own timestamp, when known
    # False when the report carries no counts (a Bifrost registration whose heartbeat
    # snapshot is gone): such a worker is never judged idle.
    complete: bool = True

    @property
    def running(self) -> tuple[str, ...]:
        """The executions the report shows running (also one a killed process is being killed in)."""
        return tuple(p.execution.execution_id for p in self.processes if p.execution is not None)

    @property
    def runs_nothing(self) -> bool:
        """Nothing running by this report: no busy count, no busy process, no attached execution."""
        return (
            self.complete
            and self.busy_count == 0
            and not any(p.state == "busy" or p.execution is not None for p in self.processes)
        )
