"""Worker configuration: the environment the operator injects (DESIGN §2), declared once."""

from __future__ import annotations

import socket
from typing import Self

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..contracts.names import DEFAULT_QUEUE_KEY, DEFAULT_REGISTRATION_TTL_SECONDS
from ..contracts.redis_url import RedisUrlError, parse_redis_url
from ..settings_errors import describe

# How long every loop of the worker waits after a failed Redis call before it tries again.
RETRY_SECONDS = 0.5


class WorkerConfigError(ValueError):
    """A bad environment value; the message names the variable (never its value)."""


class WorkerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, frozen=True, extra="ignore")

    worker_id: str = Field(default_factory=socket.gethostname)
    redis_url: str
    # The CA bundle that verifies a rediss:// server (the operator mounts the pool's caSecretRef here).
    redis_tls_ca_file: str | None = None
    pool_name: str | None = None
    pool_namespace: str | None = None
    min_workers: PositiveInt = 2
    max_workers: PositiveInt = 10
    execution_timeout_seconds: float = Field(300.0, ge=0.1)
    graceful_shutdown_seconds: NonNegativeFloat = 5.0
    recycle_after_executions: NonNegativeInt = 0
    heartbeat_interval_seconds: float = Field(10.0, ge=0.1, validation_alias="WORKER_HEARTBEAT_INTERVAL_SECONDS")
    queue_key: str = DEFAULT_QUEUE_KEY
    # Default: the contract's TTL, or three heartbeats if that is longer.
    registration_ttl_seconds: float | None = Field(None, ge=1)
    # Excess idle processes above min are stopped after this long.
    process_idle_seconds: NonNegativeFloat = 60.0
    # An execution whose worker was lost this many times gets a failure result.
    max_attempts: PositiveInt = 3
    result_ttl_seconds: PositiveInt = 86400
    # Prometheus metrics (worker/metrics.py) on this port; unset: none served.
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="WORKER_METRICS_PORT")
    # Comma-separated modules whose functions may run (their submodules too); unset: any.
    allowed_modules: str | None = Field(None, max_length=16384, validation_alias="WORKER_ALLOWED_MODULES")

    def allows(self, function: str) -> bool:
        """Whether `module:callable` names a function of an allowed module (`allowed_modules`)."""
        if self.allowed_modules is None:
            return True
        module = function.partition(":")[0]
        allowed = (m.strip() for m in self.allowed_modules.split(","))
        return any(m and (module == m or module.startswith(m + ".")) for m in allowed)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        try:
            parse_redis_url(self.redis_url)
        except RedisUrlError as exc:  # its message never repeats the URL
            raise ValueError(f"REDIS_URL: {exc}") from None
        if self.max_workers < self.min_workers:
            raise ValueError(f"MAX_WORKERS={self.max_workers} must be >= MIN_WORKERS={self.min_workers}")
        if self.registration_ttl_seconds is None:
            ttl = max(DEFAULT_REGISTRATION_TTL_SECONDS, 3 * self.heartbeat_interval_seconds)
            object.__setattr__(self, "registration_ttl_seconds", ttl)  # frozen: set once, here
        elif self.registration_ttl_seconds <= self.heartbeat_interval_seconds:
            raise ValueError(
                f"REGISTRATION_TTL_SECONDS={self.registration_ttl_seconds:g} must be longer than "
                f"WORKER_HEARTBEAT_INTERVAL_SECONDS={self.heartbeat_interval_seconds:g}"
            )
        return self

    @property
    def ttl(self) -> float:
        assert self.registration_ttl_seconds is not None  # filled in by _consistent
        return self.registration_ttl_seconds

    @property
    def lease_seconds(self) -> float:
        """A claimed execution is re-queued if its worker stops renewing it this long."""
        return self.ttl

    @classmethod
    def from_env(cls) -> WorkerConfig:
        try:
            return cls()  # redis_url comes from REDIS_URL
        except ValidationError as exc:
            if any(e["type"] == "missing" and e["loc"] == ("redis_url",) for e in exc.errors()):
                raise WorkerConfigError("REDIS_URL is required (e.g. redis://redis:6379/0)") from None
            raise WorkerConfigError(describe(exc, secret={"redis_url"})) from None
