"""Operator configuration: WORKERPOOL_* environment variables, declared once, validated at start-up."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveFloat, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..settings_errors import describe

PREFIX = "WORKERPOOL_"


class OperatorConfigError(ValueError):
    pass


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, frozen=True, extra="ignore")

    # Comma-separated; empty = cluster-wide.
    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    worker_image: str = "ghcr.io/bifrost-dev/workerpool-operator:0.1.0"
    resync_seconds: PositiveFloat = 10.0  # re-read of worker:* hashes pub/sub may have missed
    queue_poll_seconds: PositiveFloat = 0.25  # queue depth check (one pipelined call per Redis)
    status_min_interval: PositiveFloat = Field(1.0, validation_alias=f"{PREFIX}STATUS_MIN_INTERVAL_SECONDS")
    status_volatile_refresh: PositiveFloat = Field(30.0, validation_alias=f"{PREFIX}STATUS_REFRESH_SECONDS")
    metrics_port: int = Field(8080, gt=0, lt=65536)
    liveness_port: int = Field(8081, gt=0, lt=65536)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @classmethod
    def from_env(cls) -> OperatorConfig:
        try:
            return cls()
        except ValidationError as exc:
            raise OperatorConfigError(describe(exc, PREFIX)) from None
