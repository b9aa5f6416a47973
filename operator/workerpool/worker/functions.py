"""Example functions for demos, tests and benchmarks.

Submit them as `workerpool.worker.functions:<name>`, e.g.
`workerpool submit workerpool.worker.functions:sleep --param seconds=2 --count 20`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any


def noop() -> None:
    """Returns at once (throughput benchmarks)."""


def started_at() -> float:
    """Returns the wall-clock time the function started (dispatch-latency benchmarks)."""
    return time.time()


def echo(**kwargs: Any) -> dict[str, Any]:
    """Returns its parameters."""
    return kwargs


def sleep(seconds: float = 1.0) -> float:
    """Sleeps, then returns how long it slept."""
    time.sleep(seconds)
    return seconds


def cpu_burn(seconds: float = 1.0) -> int:
    """Spins the CPU for `seconds`; returns the loop count."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return n


def fail(message: str = "failed on purpose") -> None:
    """Raises ValueError."""
    raise ValueError(message)


def crash(exit_code: int = 13) -> None:
    """Ends the process abruptly, as a segfault or an OOM kill would."""
    os._exit(exit_code)


def hang(ignore_sigterm: bool = False) -> None:
    """Never returns (timeout tests); optionally ignores SIGTERM so only SIGKILL ends it."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


def pid() -> int:
    """Returns the pid of the process that ran it."""
    return os.getpid()
