"""Evicting a worker pod (`kubectl drain`, cluster-autoscaler, Karpenter, the
descheduler all call the Eviction API): allowed only when the worker holds no
execution, otherwise held with HTTP 429, which every one of them retries.

The operator first retires the worker in Redis (one script: it claims nothing
new, and the script answers which executions it still holds); that answer,
not a heartbeat, decides. The heartbeat only adds how long each has run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..contracts.wire import WorkerInfo
from .scaling import Event

SHOWN = 5  # executions named in one answer


@dataclass(frozen=True)
class EvictionVerdict:
    allowed: bool
    message: str  # the answer to the evicting client (kubectl drain prints it)
    event: Event  # on the WorkerPool; stable text, so a drain retrying every 5 s posts it once a minute


def judge_eviction(worker: str, held: Sequence[str] | None, info: WorkerInfo | None) -> EvictionVerdict:
    """`held`: what the retire script says the worker holds (None: Redis could not be asked)."""
    if held is None:
        message = (
            f"cannot confirm that worker {worker} runs no execution (Redis unavailable): "
            "eviction held until Redis answers"
        )
        return EvictionVerdict(False, message, Event("Warning", "EvictionHeld", message))
    if not held:
        message = f"worker {worker} holds no execution and claims no new one: eviction allowed"
        return EvictionVerdict(True, message, Event("Normal", "EvictionAllowed", message))
    running = ", ".join(_describe(execution, info) for execution in sorted(held)[:SHOWN])
    more = f" and {len(held) - SHOWN} more" if len(held) > SHOWN else ""
    answer = (
        f"worker {worker} is running {len(held)} execution(s): {running}{more}; "
        "it claims no new work and can be evicted once they finish"
    )
    event = (
        f"eviction of {worker} held: {len(held)} running execution(s); "
        "it claims no new work and is evicted once they finish"
    )
    return EvictionVerdict(False, answer, Event("Warning", "EvictionHeld", event))


def _describe(execution_id: str, info: WorkerInfo | None) -> str:
    for process in info.processes if info is not None else ():
        if process.execution is not None and process.execution.execution_id == execution_id:
            return f"{execution_id} (running {process.execution.elapsed_seconds:.0f} s in pid {process.pid})"
    return execution_id
