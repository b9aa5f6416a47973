"""The result an execution gets from what its process did: the child's `done`
message, or the process exiting under it (timed out, or crashed)."""

from __future__ import annotations

from typing import Any

from ..contracts.wire import ExecutionResult
from .process import KillReason, Running


def done_result(msg: tuple[Any, ...], worker_id: str) -> ExecutionResult:
    """The child's `("done", id, success, result, error, error_type, duration_ms)`."""
    _, execution_id, success, result, error, error_type, duration_ms = msg
    return ExecutionResult(
        execution_id=execution_id,
        success=success,
        result=result,
        error=error,
        error_type=error_type,
        duration_ms=round(duration_ms, 3),
        worker_id=worker_id,
    )


def failed_result(execution_id: str, error_type: str, error: str, worker_id: str) -> ExecutionResult:
    """An execution that failed before it ran (lost too often, no or a bad context)."""
    return ExecutionResult(
        execution_id=execution_id,
        success=False,
        error=error,
        error_type=error_type,
        duration_ms=0.0,
        worker_id=worker_id,
    )


def lost_result(
    running: Running, reason: KillReason | None, exit_code: int | None, now: float, worker_id: str
) -> ExecutionResult:
    """Its process exited before it finished: a timeout the pool enforced, or a crash."""
    if reason == KillReason.TIMEOUT:
        error = f"execution exceeded its timeout of {running.timeout_seconds:g} s and was terminated"
        error_type = "TimeoutError"
    else:
        error = f"the process running it exited unexpectedly (exit code {exit_code})"
        error_type = "ProcessCrashed"
    return ExecutionResult(
        execution_id=running.execution_id,
        success=False,
        error=error,
        error_type=error_type,
        duration_ms=round((now - running.started_monotonic) * 1000, 3),
        worker_id=worker_id,
    )
