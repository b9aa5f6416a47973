"""The Celery side of bench/worker_vs_celery.py: the same functions, Celery's prefork pool."""

from __future__ import annotations

import os
import time

from celery import Celery

URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379")
app = Celery("bench", broker=f"{URL}/1", backend=f"{URL}/2")
app.conf.update(
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="started_at")
def started_at() -> float:
    return time.time()
