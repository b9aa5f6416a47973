"""Evicting a worker pod (`kubectl drain`, cluster-autoscaler, Karpenter, the
descheduler all call the Eviction API): allowed only when the worker holds no
execution, otherwise held with HTTP 429, which every one of them retries.

With the retire handshake (seed) the operator first retires the worker in
Redis (one script: it claims nothing new, and the script answers which
executions it still holds); that answer, not a heartbeat, decides. The
heartbeat only adds how long each has run. Without one (Bifrost's worker) the
worker's fresh heartbeat snapshot decides: busy is held, idle allowed, and a
snapshot too old to trust is held as unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..contracts.report import WorkerReport
from .events import Event, EventReason

SHOWN = 5  # executions named in one answer


@dataclass(frozen=True)
class EvictionVerdict:
    allowed: bool
    message: str  # the answer to the evicting client (kubectl drain prints it)
    event: Event  # on the WorkerPool; stable text, so a drain retrying every 5 s posts it once a minute


def judge_eviction(
    worker: str, held: Sequence[str] | None, info: WorkerReport | None, handshake: bool = True, why: str = ""
) -> EvictionVerdict:
    """`held`: what the worker holds, by the retire script (`handshake`) or by its fresh
    heartbeat snapshot (None: unknown; `why` says why)."""
    if held is None:
        cause = why or "Redis unavailable"
        message = (
            f"cannot confirm that worker {worker} runs no execution ({cause}): "
            "eviction held until the worker's state is known"
        )
        return EvictionVerdict(False, message, Event("Warning", EventReason.EVICTION_HELD, message))
    if not held:
        message = (
            f"worker {worker} holds no execution and claims no new one: eviction allowed"
            if handshake
            else f"worker {worker} runs nothing by its fresh heartbeat: eviction allowed"
        )
        return EvictionVerdict(True, message, Event("Normal", EventReason.EVICTION_ALLOWED, message))
    running = ", ".join(_describe(execution, info) for execution in sorted(held)[:SHOWN])
    more = f" and {len(held) - SHOWN} more" if len(held) > SHOWN else ""
    after = (
        "it claims no new work and can be evicted once they finish"
        if handshake
        else "it can be evicted once a heartbeat shows it runs nothing"
    )
    answer = f"worker {worker} is running {len(held)} execution(s): {running}{more}; {after}"
    event = f"eviction of {worker} held: {len(held)} running execution(s); " + (
        "it claims no new work and is evicted once they finish" if handshake else "evicted once it runs nothing"
    )
    return EvictionVerdict(False, answer, Event("Warning", EventReason.EVICTION_HELD, event))


def judge_draining(worker: str, info: WorkerReport | None) -> EvictionVerdict:
    """A worker that drains on SIGTERM: the eviction's deletion is its retirement."""
    running = f"the {len(info.running)} execution(s) it runs" if info is not None and info.running else "what it runs"
    message = (
        f"worker {worker} drains on SIGTERM: eviction allowed; it takes no new delivery and finishes "
        f"{running} within its drain deadline"
    )
    return EvictionVerdict(True, message, Event("Normal", EventReason.EVICTION_ALLOWED, message))


def hold_expired(held: EvictionVerdict, worker: str, held_for: float, limit: float) -> EvictionVerdict:
    """A held eviction past its limit (the longest a running execution may still take, from the
    first hold) is allowed, with a Warning: a drain never waits forever on a worker that never
    answers or an execution that outlives its own timeout."""
    if held_for <= limit:
        return held
    message = (
        f"eviction of {worker} allowed: held for {held_for:.0f} s, past the pool's limit of {limit:.0f} s"
        f" (executionTimeoutSeconds + gracefulShutdownSeconds); it was held because {held.message}"
    )
    return EvictionVerdict(True, message, Event("Warning", EventReason.EVICTION_HOLD_EXPIRED, message))


def _describe(execution_id: str, info: WorkerReport | None) -> str:
    for process in info.processes if info is not None else ():
        if process.execution is not None and process.execution.execution_id == execution_id:
            return f"{execution_id} (running {process.execution.elapsed_seconds:.0f} s in pid {process.pid})"
    return execution_id
