"""The long-lived process pool (the seed's phases 1-2).

Between `min_processes` and `max_processes` processes; one execution per
process; states idle / busy / killed only. Everything is event-driven on the
asyncio loop: a process's pipe becoming readable delivers its result, its
sentinel becoming readable reports its exit; timeouts are loop timers. Nothing
polls. A process is handled by process.py; the results it produces by
outcomes.py.

The sizes are processes in one worker pod: the heartbeat's `min_workers` /
`max_workers` carry them under the seed's names (WorkerConfig.min_workers,
`WORKERPOOL_MIN_WORKERS`), while a WorkerPool's `spec.minWorkers` counts pods.
They meet only in the pod template: the operator never reads these sizes to
scale, it counts processes by state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..contracts.wire import ExecutionResult, ProcessInfo, ProcessState
from . import metrics
from .outcomes import done_result, lost_result
from .process import KillReason, PoolProcess, Refusal, Running, recycle_target

log = logging.getLogger(__name__)

ResultSink = Callable[[ExecutionResult], None]


@dataclass(frozen=True)
class PoolLimits:
    min_processes: int
    max_processes: int
    execution_timeout: float  # s, when the execution names none
    graceful_shutdown: float  # s from SIGTERM to SIGKILL
    recycle_after: int  # executions per process (0: never)
    idle_seconds: float  # an idle process above min is stopped after this long


class ProcessPool:
    def __init__(
        self, worker_id: str, limits: PoolLimits, on_result: ResultSink, on_change: Callable[[], None]
    ) -> None:
        self.worker_id = worker_id
        self.min, self.max = limits.min_processes, limits.max_processes
        self.execution_timeout, self.graceful_shutdown = limits.execution_timeout, limits.graceful_shutdown
        self.recycle_after, self.idle_seconds = limits.recycle_after, limits.idle_seconds
        self.on_result, self.on_change = on_result, on_change
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
        proc = PoolProcess.spawn(self._ctx, self.worker_id, f"process-{next(self._ids)}")
        loop = asyncio.get_running_loop()
        loop.add_reader(proc.conn.fileno(), self._on_readable, proc)
        loop.add_reader(proc.mp.sentinel, self._on_exit, proc)
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
        self, proc: PoolProcess, execution_id: str, function: str, parameters: dict[str, Any], timeout: float | None
    ) -> None:
        assert proc.state == "idle"
        limit = timeout or self.execution_timeout
        running = Running(execution_id, dt.datetime.now(dt.UTC), time.monotonic(), limit)
        running.timer = asyncio.get_running_loop().call_later(limit, self._on_timeout, proc, execution_id)
        try:
            proc.send_run(running, function, parameters)
        except (OSError, ValueError) as exc:  # its pipe is gone: the exit handler reports it
            log.warning("%s pid %d: could not send %s: %s", proc.process_id, proc.pid, execution_id, exc)
        self._notify()

    # --- events -----------------------------------------------------------------------------

    def _on_readable(self, proc: PoolProcess) -> None:
        msg = proc.receive()
        if msg is not None and msg[0] == "done":
            self._on_done(proc, msg)

    def _on_done(self, proc: PoolProcess, msg: tuple[Any, ...]) -> None:
        running = proc.execution
        if running is None or running.execution_id != msg[1] or proc.state != "busy":
            # Finished after the pool gave up on it (timeout): the timeout result stands.
            log.info("%s: ignoring late result of %s", proc.process_id, msg[1])
            return
        proc.finish()
        self.on_result(done_result(msg, self.worker_id))
        if self.recycle_after and proc.executions_completed >= self.recycle_after:
            log.info("%s pid %d: recycling after %d executions", proc.process_id, proc.pid, proc.executions_completed)
            self._stop(proc, KillReason.RECYCLE)
        self._notify()

    def _on_timeout(self, proc: PoolProcess, execution_id: str) -> None:
        if proc.execution is None or proc.execution.execution_id != execution_id:
            return
        limit, grace = proc.execution.timeout_seconds, self.graceful_shutdown
        log.warning(
            "%s pid %d: execution %s exceeded %.1f s: SIGTERM, SIGKILL after %.1f s",
            *(proc.process_id, proc.pid, execution_id, limit, grace),
        )
        self._stop(proc, KillReason.TIMEOUT)
        self._notify()

    def _stop(self, proc: PoolProcess, reason: KillReason) -> None:
        if proc.stop(reason, self.graceful_shutdown) and reason == KillReason.RECYCLE:
            metrics.RECYCLES.inc()

    def _on_exit(self, proc: PoolProcess) -> None:
        loop = asyncio.get_running_loop()
        if proc.kill_reason is None:
            metrics.CRASHES.inc()
        for fd in (proc.mp.sentinel, proc.conn.fileno()):
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
        if proc.state == "busy":  # a result that raced the exit is still in the pipe: deliver it first
            for msg in proc.raced_results():
                self._on_done(proc, msg)
        running, pid = proc.execution, proc.pid
        exit_code = proc.close()
        if running is not None:
            if proc.kill_reason != KillReason.TIMEOUT:
                log.error(
                    "%s pid %d crashed (exit code %s) running %s", proc.process_id, pid, exit_code, running.execution_id
                )
            self.on_result(lost_result(running, proc.kill_reason, exit_code, time.monotonic(), self.worker_id))
        elif proc.kill_reason is None:
            log.error("%s pid %d exited unexpectedly while idle (exit code %s)", proc.process_id, pid, exit_code)
        self.processes.remove(proc)
        self._replace(proc)

    def _replace(self, gone: PoolProcess) -> None:
        if not self.closing and gone.kill_reason != KillReason.SCALE_DOWN and self.live() < self.max:
            # Replace what was killed or crashed (demand brings back more), not beyond max: while it took
            # its graceful period to exit it did not count, and new work may have started one in its place.
            self._spawn()
        self.ensure_min()
        if not self.processes:
            self._all_exited.set()
        self._notify()

    # --- operations -------------------------------------------------------------------------

    def recycle(self, pid: int | None) -> Refusal | None:
        """Recycle `pid`, or any idle one (None: recycling it; else why not). Never a busy one."""
        target = recycle_target(self.processes, pid)
        if isinstance(target, Refusal):
            return target
        log.info("recycling %s pid %d", target.process_id, target.pid)
        self._stop(target, KillReason.RECYCLE)
        self._notify()
        return None

    def scale_down_idle(self) -> None:
        """Stop idle processes above min that have been idle for `idle_seconds`."""
        now = time.monotonic()
        for proc in sorted(self.processes, key=lambda p: p.idle_since):
            if self.live() <= self.min:
                return
            if proc.state == "idle" and now - proc.idle_since >= self.idle_seconds:
                idle = now - proc.idle_since
                log.info(
                    "%s pid %d: idle for %.0f s, above min %d: stopping", proc.process_id, proc.pid, idle, self.min
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
            # An idle one is asked to stop (it exits at once); a busy one gets SIGTERM.
            proc.stop(KillReason.SHUTDOWN, self.graceful_shutdown, ask_first=proc.state == "idle")
        await self._all_exited.wait()
