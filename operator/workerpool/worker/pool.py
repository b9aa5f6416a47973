"""The long-lived process pool (the seed's phases 1-2).

Between `min_workers` and `max_workers` processes; one execution per process;
states idle / busy / killed only. Everything is event-driven on the asyncio
loop: a process's pipe becoming readable delivers its result, its sentinel
becoming readable reports its exit; timeouts are loop timers. Nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ..contracts.wire import ExecutionInfo, ExecutionResult, ProcessInfo, ProcessState
from . import metrics
from .child import child_main

log = logging.getLogger(__name__)

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


@dataclass
class Running:
    execution_id: str
    started_at: dt.datetime
    started_monotonic: float
    timeout_seconds: float
    timer: asyncio.TimerHandle | None = None


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


ResultSink = Callable[[ExecutionResult], None]


class ProcessPool:
    def __init__(
        self,
        *,
        worker_id: str,
        min_processes: int,
        max_processes: int,
        execution_timeout: float,
        graceful_shutdown: float,
        recycle_after: int,
        idle_seconds: float,
        on_result: ResultSink,
        on_change: Callable[[], None],
    ) -> None:
        self.worker_id = worker_id
        self.min = min_processes
        self.max = max_processes
        self.execution_timeout = execution_timeout
        self.graceful_shutdown = graceful_shutdown
        self.recycle_after = recycle_after
        self.idle_seconds = idle_seconds
        self.on_result = on_result
        self.on_change = on_change
        self.processes: list[PoolProcess] = []
        self.closing = False
        self._ids = itertools.count(1)
        self._ctx = multiprocessing.get_context("forkserver")
        # The forkserver imports the child code once; each new process is a fork of it.
        self._ctx.set_forkserver_preload(["workerpool.worker.child", "workerpool.worker.functions"])
        self._all_exited = asyncio.Event()
        self._all_exited.set()
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self.on_change()

    # --- views ------------------------------------------------------------------------

    def snapshot(self) -> list[ProcessInfo]:
        now = time.monotonic()
        return [p.info(now) for p in self.processes]

    def count(self, state: ProcessState) -> int:
        return sum(1 for p in self.processes if p.state == state)

    def live(self) -> int:
        return sum(1 for p in self.processes if p.state != "killed")

    def capacity(self) -> int:
        """Executions that could start now: idle processes plus room to grow."""
        if self.closing:
            return 0
        return self.count("idle") + max(0, self.max - self.live())

    def running_execution_ids(self) -> list[str]:
        return [p.execution.execution_id for p in self.processes if p.execution is not None]

    def busy(self) -> bool:
        return any(p.state == "busy" for p in self.processes)

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.ensure_min()

    def ensure_min(self) -> None:
        while not self.closing and self.live() < self.min:
            self._spawn()

    def _spawn(self) -> PoolProcess:
        parent, child = self._ctx.Pipe(duplex=True)
        mp = self._ctx.Process(target=child_main, args=(child,), name=f"{self.worker_id}-pool", daemon=True)
        mp.start()
        child.close()
        proc = PoolProcess(
            process_id=f"process-{next(self._ids)}", mp=mp, conn=parent, started_monotonic=time.monotonic()
        )
        loop = asyncio.get_running_loop()
        loop.add_reader(parent.fileno(), self._on_readable, proc)
        loop.add_reader(mp.sentinel, self._on_exit, proc)
        self.processes.append(proc)
        self._all_exited.clear()
        log.info("started %s pid %d (pool %d/%d)", proc.process_id, proc.pid, self.live(), self.max)
        self._notify()
        return proc

    def acquire(self) -> PoolProcess | None:
        """An idle process, or a new one if the pool may grow; None when full."""
        if self.closing:
            return None
        for proc in self.processes:
            if proc.state == "idle":
                return proc
        if self.live() < self.max:
            return self._spawn()  # scale up on demand
        return None

    def run(
        self,
        proc: PoolProcess,
        execution_id: str,
        function: str,
        parameters: dict[str, Any],
        timeout: float | None,
    ) -> None:
        assert proc.state == "idle"
        limit = timeout or self.execution_timeout
        running = Running(execution_id, dt.datetime.now(dt.UTC), time.monotonic(), limit)
        running.timer = asyncio.get_running_loop().call_later(limit, self._on_timeout, proc, execution_id)
        proc.state, proc.execution = "busy", running
        try:
            proc.conn.send(("run", execution_id, function, parameters))
        except (OSError, ValueError) as exc:  # its pipe is gone: the exit handler reports it
            log.warning("%s pid %d: could not send %s: %s", proc.process_id, proc.pid, execution_id, exc)
        self._notify()

    # --- events -----------------------------------------------------------------------------

    def _on_readable(self, proc: PoolProcess) -> None:
        try:
            msg = proc.conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(proc.conn.fileno())
            return  # the sentinel reports the exit
        if msg[0] == "done":
            self._on_done(proc, msg)

    def _on_done(self, proc: PoolProcess, msg: tuple[Any, ...]) -> None:
        _, execution_id, success, result, error, error_type, duration_ms = msg
        running = proc.execution
        if running is None or running.execution_id != execution_id or proc.state != "busy":
            # Finished after the pool gave up on it (timeout): the timeout result stands.
            log.info("%s: ignoring late result of %s", proc.process_id, execution_id)
            return
        if running.timer is not None:
            running.timer.cancel()
        proc.execution = None
        proc.state = "idle"
        proc.idle_since = time.monotonic()
        proc.executions_completed += 1
        self.on_result(
            ExecutionResult(
                execution_id=execution_id,
                success=success,
                result=result,
                error=error,
                error_type=error_type,
                duration_ms=round(duration_ms, 3),
                worker_id=self.worker_id,
            )
        )
        if self.recycle_after and proc.executions_completed >= self.recycle_after:
            log.info(
                "%s pid %d: recycling after %d executions",
                proc.process_id,
                proc.pid,
                proc.executions_completed,
            )
            self._stop(proc, KillReason.RECYCLE)
        self._notify()

    def _on_timeout(self, proc: PoolProcess, execution_id: str) -> None:
        if proc.execution is None or proc.execution.execution_id != execution_id:
            return
        log.warning(
            "%s pid %d: execution %s exceeded %.1f s: SIGTERM, SIGKILL after %.1f s",
            proc.process_id,
            proc.pid,
            execution_id,
            proc.execution.timeout_seconds,
            self.graceful_shutdown,
        )
        self._stop(proc, KillReason.TIMEOUT)
        self._notify()

    def _stop(self, proc: PoolProcess, reason: KillReason) -> None:
        """SIGTERM now, SIGKILL after the graceful period; the exit handler cleans up."""
        if proc.kill_reason is not None:
            return
        proc.kill_reason = reason
        proc.state = "killed"
        if reason == KillReason.RECYCLE:
            metrics.RECYCLES.inc()
        _signal(proc, signal.SIGTERM)
        proc.kill_timer = asyncio.get_running_loop().call_later(self.graceful_shutdown, _signal, proc, signal.SIGKILL)

    def _on_exit(self, proc: PoolProcess) -> None:
        loop = asyncio.get_running_loop()
        if proc.kill_reason is None:
            metrics.CRASHES.inc()
        for fd in (proc.mp.sentinel, proc.conn.fileno()):
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
        # A result that raced the exit is still in the pipe: deliver it first.
        with contextlib.suppress(EOFError, OSError):
            while proc.state == "busy" and proc.conn.poll():
                msg = proc.conn.recv()  # EOFError ends the loop
                if msg[0] == "done":
                    self._on_done(proc, msg)
        proc.mp.join(0)
        exit_code = proc.mp.exitcode
        if proc.kill_timer is not None:
            proc.kill_timer.cancel()
        running = proc.execution
        if running is not None:
            if running.timer is not None:
                running.timer.cancel()
            elapsed = (time.monotonic() - running.started_monotonic) * 1000
            if proc.kill_reason == KillReason.TIMEOUT:
                error, error_type = (
                    (f"execution exceeded its timeout of {running.timeout_seconds:g} s and was terminated"),
                    "TimeoutError",
                )
            else:
                error, error_type = (
                    (f"the process running it exited unexpectedly (exit code {exit_code})"),
                    "ProcessCrashed",
                )
                log.error(
                    "%s pid %d crashed (exit code %s) running %s",
                    proc.process_id,
                    proc.pid,
                    exit_code,
                    running.execution_id,
                )
            self.on_result(
                ExecutionResult(
                    execution_id=running.execution_id,
                    success=False,
                    error=error,
                    error_type=error_type,
                    duration_ms=round(elapsed, 3),
                    worker_id=self.worker_id,
                )
            )
        elif proc.kill_reason is None:
            log.error(
                "%s pid %d exited unexpectedly while idle (exit code %s)",
                proc.process_id,
                proc.pid,
                exit_code,
            )
        proc.conn.close()
        proc.mp.close()
        self.processes.remove(proc)
        if not self.closing and proc.kill_reason != KillReason.SCALE_DOWN and self.live() < self.max:
            # Replace what was killed or crashed; demand brings back more when needed. Not
            # beyond max: while this process took its graceful period to exit it did not
            # count, and new work may have started a process in its place already.
            self._spawn()
        self.ensure_min()
        if not self.processes:
            self._all_exited.set()
        self._notify()

    # --- operations -------------------------------------------------------------------------

    def recycle(self, pid: int | None) -> str:
        """Recycle process `pid`, or any idle one when None. A busy process is never recycled."""
        if pid is None:
            target = next((p for p in self.processes if p.state == "idle"), None)
            if target is None:
                return "no idle process to recycle"
        else:
            target = next((p for p in self.processes if p.pid == pid), None)
            if target is None:
                return f"no process with pid {pid}"
            if target.state == "busy":
                assert target.execution is not None
                return (
                    f"refusing to recycle pid {pid}: it is busy running "
                    f"{target.execution.execution_id} (a busy process is never recycled)"
                )
            if target.state == "killed":
                return f"pid {pid} is already being stopped"
        self._stop(target, KillReason.RECYCLE)
        self._notify()
        return f"recycling {target.process_id} pid {target.pid}"

    def scale_down_idle(self) -> None:
        """Stop idle processes above min that have been idle for `idle_seconds`."""
        now = time.monotonic()
        for proc in sorted(self.processes, key=lambda p: p.idle_since):
            if self.live() <= self.min:
                return
            if proc.state == "idle" and now - proc.idle_since >= self.idle_seconds:
                log.info(
                    "%s pid %d: idle for %.0f s, above min %d: stopping",
                    proc.process_id,
                    proc.pid,
                    now - proc.idle_since,
                    self.min,
                )
                self._stop(proc, KillReason.SCALE_DOWN)
                self._notify()

    async def wait_idle(self) -> None:
        """Until no process is busy (each execution is bounded by its timeout)."""
        while True:
            self._changed.clear()
            if not self.busy():
                return
            await self._changed.wait()

    async def close(self) -> None:
        """Stop every process (after `wait_idle` for a graceful shutdown)."""
        self.closing = True
        for proc in list(self.processes):
            if proc.state == "idle":
                with contextlib.suppress(OSError, ValueError):
                    proc.conn.send(("stop",))
                proc.kill_reason = KillReason.SHUTDOWN
                proc.state = "killed"
                proc.kill_timer = asyncio.get_running_loop().call_later(
                    self.graceful_shutdown, _signal, proc, signal.SIGKILL
                )
            else:
                self._stop(proc, KillReason.SHUTDOWN)
        await self._all_exited.wait()


def _signal(proc: PoolProcess, sig: signal.Signals) -> None:
    if proc.pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
