"""One long-lived child process of the pool: its handle (pipe, sentinel), the
execution it runs, and how it is stopped (SIGTERM, then SIGKILL after the
graceful period). The pool (process_pool.py) decides when; this module does it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

from ..contracts.wire import ExecutionInfo, ProcessInfo, ProcessState
from .child import child_main
from .metrics import CommandOutcome

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


@dataclass
class Running:
    execution_id: str
    started_at: dt.datetime
    started_monotonic: float
    timeout_seconds: float
    timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class KillReason(StrEnum):
    """Why the pool stops one of its processes (decides whether it is replaced, and the result)."""

    TIMEOUT = "timeout"
    RECYCLE = "recycle"
    SCALE_DOWN = "scale_down"
    SHUTDOWN = "shutdown"


@dataclass
class PoolProcess:
    process_id: str
    mp: BaseProcess
    conn: Connection
    started_monotonic: float
    state: ProcessState = "idle"
    executions_completed: int = 0
    execution: Running | None = None
    idle_since: float = field(default_factory=time.monotonic)
    kill_reason: KillReason | None = None  # why the pool is stopping it
    kill_timer: asyncio.TimerHandle | None = None

    @classmethod
    def spawn(cls, ctx: ForkServerContext, worker_id: str, process_id: str) -> PoolProcess:
        """A new child (a fork of the forkserver, which imported the child code once)."""
        parent, child = ctx.Pipe(duplex=True)
        mp = ctx.Process(target=child_main, args=(child,), name=f"{worker_id}-pool", daemon=True)
        mp.start()
        child.close()
        return cls(process_id=process_id, mp=mp, conn=parent, started_monotonic=time.monotonic())

    @property
    def pid(self) -> int:
        return self.mp.pid or 0

    def memory_mb(self) -> float:
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                return round(int(f.read().split()[1]) * _PAGE_MB, 1)
        except (OSError, IndexError, ValueError):
            return 0.0

    def info(self, now: float) -> ProcessInfo:
        execution = None
        if self.state == "busy" and self.execution is not None:
            execution = ExecutionInfo(
                execution_id=self.execution.execution_id,
                started_at=self.execution.started_at,
                elapsed_seconds=round(now - self.execution.started_monotonic, 3),
            )
        return ProcessInfo(
            pid=self.pid or 1,
            process_id=self.process_id,
            state=self.state,
            memory_mb=self.memory_mb(),
            uptime_seconds=round(now - self.started_monotonic, 3),
            executions_completed=self.executions_completed,
            execution=execution,
        )

    def send_run(self, running: Running, function: str, parameters: dict[str, Any]) -> None:
        """Busy from now; the send may fail (the pipe is gone): then the exit reports it."""
        self.state, self.execution = "busy", running
        self.conn.send(("run", running.execution_id, function, parameters))

    def receive(self) -> tuple[Any, ...] | None:
        """The child's next message (None: its pipe closed; the sentinel reports the exit)."""
        try:
            msg: tuple[Any, ...] = self.conn.recv()
            return msg
        except (EOFError, OSError):
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.conn.fileno())
            return None

    def raced_results(self) -> list[tuple[Any, ...]]:
        """After its exit: the `done` messages still in the pipe (a result that raced the exit)."""
        found = []
        with contextlib.suppress(EOFError, OSError):
            while self.conn.poll():
                msg = self.conn.recv()  # EOFError ends the loop
                if msg[0] == "done":
                    found.append(msg)
        return found

    def finish(self) -> None:
        """Idle again after a result, its execution's timeout cancelled."""
        if self.execution is not None:
            self.execution.cancel_timer()
        self.execution, self.state, self.idle_since = None, "idle", time.monotonic()
        self.executions_completed += 1

    def stop(self, reason: KillReason, graceful_seconds: float, *, ask_first: bool = False) -> bool:
        """Stop it (False: already stopping): SIGTERM now, or for an idle process at shutdown a
        `stop` message; SIGKILL after the graceful period either way. Its exit cleans up."""
        if self.kill_reason is not None:
            return False
        self.kill_reason, self.state = reason, "killed"
        if ask_first:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("stop",))
        else:
            self.signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        self.kill_timer = loop.call_later(graceful_seconds, self.signal, signal.SIGKILL)
        return True

    def signal(self, sig: signal.Signals) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def close(self) -> int | None:
        """After its exit: its exit code; its handles and timers released."""
        self.mp.join(0)
        exit_code = self.mp.exitcode
        if self.kill_timer is not None:
            self.kill_timer.cancel()
        if self.execution is not None:
            self.execution.cancel_timer()
        self.conn.close()
        self.mp.close()
        return exit_code


@dataclass(frozen=True)
class Refusal:
    """Why a recycle command stops nothing: `outcome` is its metric label, `message` its log line."""

    outcome: CommandOutcome
    message: str


def recycle_target(processes: list[PoolProcess], pid: int | None) -> PoolProcess | Refusal:
    """The process a recycle command means (`pid`, or any idle one), or why there is none."""
    if pid is None:
        idle = next((p for p in processes if p.state == "idle"), None)
        return idle if idle is not None else Refusal("no_idle_process", "no idle process to recycle")
    target = next((p for p in processes if p.pid == pid), None)
    if target is None:
        return Refusal("no_such_pid", f"no process with pid {pid}")
    if target.state == "busy":
        running = target.execution.execution_id if target.execution is not None else "an execution"
        why = f"refusing to recycle pid {pid}: it is busy running {running} (a busy process is never recycled)"
        return Refusal("busy", why)
    if target.state == "killed":
        return Refusal("already_stopping", f"pid {pid} is already being stopped")
    return target
