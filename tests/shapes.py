"""The contract's JSON shapes, spelled out by hand (DESIGN §3), independent of the models."""

WORKER_INFO_KEYS = frozenset(
    {
        "worker_id",
        "started_at",
        "hostname",
        "min_workers",
        "max_workers",
        "pool_size",
        "idle_count",
        "busy_count",
        "processes",
    }
)
HEARTBEAT_KEYS = WORKER_INFO_KEYS | {"type", "timestamp", "pool", "namespace"}
PROCESS_KEYS = frozenset(
    {"pid", "process_id", "state", "memory_mb", "uptime_seconds", "executions_completed", "execution"}
)
EXECUTION_KEYS = frozenset({"execution_id", "started_at", "elapsed_seconds"})
RESULT_KEYS = frozenset({"execution_id", "success", "result", "error", "error_type", "duration_ms", "worker_id"})
