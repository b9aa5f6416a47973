"""The Celery side of bench/redis_failover_bench.py: a broker behind Sentinel, as Celery's
docs configure it (`sentinel://` URLs and `master_name`), and a task that writes when it
started to a file (no result backend: nothing but the broker is in the measure)."""

from __future__ import annotations

import os
import time

from celery import Celery

SENTINELS = os.environ.get("BENCH_CELERY_SENTINELS", "127.0.0.1:26379")  # host:port;host:port
MASTER = os.environ.get("BENCH_CELERY_MASTER", "mymaster")
STARTS = os.environ.get("BENCH_CELERY_STARTS", "/tmp/celery-starts")

app = Celery("bench_sentinel", broker=";".join(f"sentinel://{s}/0" for s in SENTINELS.split(";")))
app.conf.update(
    broker_transport_options={"master_name": MASTER},
    broker_connection_retry_on_startup=True,
    broker_connection_retry=True,
    broker_connection_max_retries=None,  # retry for ever, as a production worker is set up
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


@app.task(name="record_start")
def record_start(task_id: str) -> None:
    with open(STARTS, "a") as f:
        f.write(f"{task_id} {time.time():.6f}\n")
