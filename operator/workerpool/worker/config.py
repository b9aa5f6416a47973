"""Worker configuration from the environment the operator injects (DESIGN §2)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from ..contracts.names import DEFAULT_QUEUE_KEY, DEFAULT_REGISTRATION_TTL_SECONDS


class WorkerConfigError(ValueError):
    """A bad environment value; the message names the variable."""


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    redis_url: str
    pool_name: str | None = None
    pool_namespace: str | None = None
    min_workers: int = 2
    max_workers: int = 10
    execution_timeout_seconds: float = 300.0
    graceful_shutdown_seconds: float = 5.0
    recycle_after_executions: int = 0
    heartbeat_interval_seconds: float = 10.0
    queue_key: str = DEFAULT_QUEUE_KEY
    registration_ttl_seconds: float = DEFAULT_REGISTRATION_TTL_SECONDS
    # Excess idle processes above min are stopped after this long.
    process_idle_seconds: float = 60.0
    # An execution whose worker was lost this many times gets a failure result.
    max_attempts: int = 3
    result_ttl_seconds: int = 86400

    @property
    def lease_seconds(self) -> float:
        """A claimed execution is re-queued if its worker stops renewing it this long."""
        return self.registration_ttl_seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = os.environ if env is None else env

        def number(name: str, default: float, *, minimum: float, integer: bool = False) -> float:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                kind = "an integer" if integer else "a number"
                raise WorkerConfigError(f"{name}={raw!r}: expected {kind}") from None
            if value < minimum:
                raise WorkerConfigError(f"{name}={raw!r}: must be >= {minimum:g}")
            return value

        redis_url = env.get("REDIS_URL", "").strip()
        if not redis_url:
            raise WorkerConfigError("REDIS_URL is required (e.g. redis://redis:6379/0)")
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            # Never echo the value: it may carry a password.
            raise WorkerConfigError("REDIS_URL: expected a redis://, rediss:// or unix:// URL")
        min_workers = int(number("MIN_WORKERS", 2, minimum=1, integer=True))
        max_workers = int(number("MAX_WORKERS", 10, minimum=1, integer=True))
        if max_workers < min_workers:
            raise WorkerConfigError(f"MAX_WORKERS={max_workers} must be >= MIN_WORKERS={min_workers}")
        interval = number("WORKER_HEARTBEAT_INTERVAL_SECONDS", 10, minimum=0.1)
        ttl = number("REGISTRATION_TTL_SECONDS", max(DEFAULT_REGISTRATION_TTL_SECONDS, 3 * interval), minimum=1)
        if ttl <= interval:
            raise WorkerConfigError(
                f"REGISTRATION_TTL_SECONDS={ttl:g} must be longer than WORKER_HEARTBEAT_INTERVAL_SECONDS={interval:g}"
            )
        return cls(
            worker_id=env.get("WORKER_ID") or socket.gethostname(),
            redis_url=redis_url,
            pool_name=env.get("POOL_NAME") or None,
            pool_namespace=env.get("POOL_NAMESPACE") or None,
            min_workers=min_workers,
            max_workers=max_workers,
            execution_timeout_seconds=number("EXECUTION_TIMEOUT_SECONDS", 300, minimum=0.1),
            graceful_shutdown_seconds=number("GRACEFUL_SHUTDOWN_SECONDS", 5, minimum=0),
            recycle_after_executions=int(number("RECYCLE_AFTER_EXECUTIONS", 0, minimum=0, integer=True)),
            heartbeat_interval_seconds=interval,
            queue_key=env.get("QUEUE_KEY") or DEFAULT_QUEUE_KEY,
            registration_ttl_seconds=ttl,
            process_idle_seconds=number("PROCESS_IDLE_SECONDS", 60, minimum=0),
            max_attempts=int(number("MAX_ATTEMPTS", 3, minimum=1, integer=True)),
            result_ttl_seconds=int(number("RESULT_TTL_SECONDS", 86400, minimum=1, integer=True)),
        )
