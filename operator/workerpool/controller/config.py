"""Operator configuration: WORKERPOOL_* environment variables, validated at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class OperatorConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty = cluster-wide
    worker_image: str = "ghcr.io/bifrost-dev/workerpool-operator:0.1.0"
    resync_seconds: float = 10.0  # full re-read of worker:* hashes (repairs lost pub/sub)
    queue_poll_seconds: float = 0.25  # queue depth check (one pipelined call per Redis)
    status_min_interval: float = 1.0
    status_volatile_refresh: float = 30.0
    metrics_port: int = 8080
    liveness_port: int = 8081

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env

        def number(name: str, default: float) -> float:
            raw = env.get(f"WORKERPOOL_{name}")
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise OperatorConfigError(f"WORKERPOOL_{name}={raw!r}: expected a number") from None
            if value <= 0:
                raise OperatorConfigError(f"WORKERPOOL_{name}={raw!r}: must be > 0")
            return value

        namespaces = tuple(n.strip() for n in env.get("WORKERPOOL_NAMESPACES", "").split(",") if n.strip())
        return cls(
            namespaces=namespaces,
            worker_image=env.get("WORKERPOOL_WORKER_IMAGE") or cls.worker_image,
            resync_seconds=number("RESYNC_SECONDS", cls.resync_seconds),
            queue_poll_seconds=number("QUEUE_POLL_SECONDS", cls.queue_poll_seconds),
            status_min_interval=number("STATUS_MIN_INTERVAL_SECONDS", cls.status_min_interval),
            status_volatile_refresh=number("STATUS_REFRESH_SECONDS", cls.status_volatile_refresh),
            metrics_port=int(number("METRICS_PORT", cls.metrics_port)),
            liveness_port=int(number("LIVENESS_PORT", cls.liveness_port)),
        )
