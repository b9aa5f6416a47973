"""TEST INFRASTRUCTURE — running the Bifrost-wire worker (bifrost_worker.py) and talking to it.

- as a local process (`BifrostWireProcess`), for integration tests;
- in pods: the script travels in a ConfigMap and runs on the project's image
  (which has Python, redis-py and aio-pika), so no second image is built, and
  nothing of it is in the wheel or the image (`worker_template`, `configmap`);
- the work queue: publishing executions to RabbitMQ, reading ready messages;
- the ledger the worker keeps in Redis: deliveries, results, commands received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import redis

from . import bifrost_worker
from .procs import spawn

SCRIPT = Path(bifrost_worker.__file__)
MOUNT = "/opt/bifrostwire"
CONFIGMAP = "bifrost-wire-worker"
QUEUE = bifrost_worker.QUEUE


def worker_env(redis_url: str, amqp_url: str, **extra: Any) -> dict[str, str]:
    """The env a Bifrost worker reads (what the operator injects into its pods)."""
    env = {
        "BIFROST_REDIS_URL": redis_url,
        "BIFROST_RABBITMQ_URL": amqp_url,
        "BIFROST_MAX_WORKERS": "2",
        "BIFROST_MAX_CONCURRENCY": "2",
        "BIFROST_WORKER_HEARTBEAT_INTERVAL_SECONDS": "1",
        "BIFROST_GRACEFUL_SHUTDOWN_SECONDS": "1",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


class BifrostWireProcess:
    """The worker as a local process (its own process group, like a pod); `HOSTNAME` is its id."""

    def __init__(self, redis_url: str, amqp_url: str, log_dir: Path, worker_id: str | None = None, **env: Any):
        self.worker_id = worker_id or f"bw-{uuid.uuid4().hex[:6]}"
        self.env = {**os.environ, **worker_env(redis_url, amqp_url, **env), "HOSTNAME": self.worker_id}
        self.log = log_dir / f"{self.worker_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BifrostWireProcess:
        self.proc = spawn([sys.executable, str(SCRIPT)], log_path=self.log, env=self.env)
        return self

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# --- the work queue ----------------------------------------------------------------------------


def publish_executions(amqp_url: str, executions: list[dict[str, Any]], queue: str = QUEUE) -> None:
    """Publish execution messages (persistent) to the work queue, declaring it as Bifrost does."""

    async def go() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await bifrost_worker.declare_queues(channel)
            for body in executions:
                message = aio_pika.Message(json.dumps(body).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await channel.default_exchange.publish(message, routing_key=queue)

    asyncio.run(go())


class Trickle:
    """Steady traffic: one execution of `seconds` every `every` seconds, from a thread, until stopped."""

    def __init__(self, amqp_url: str, seconds: float, every: float) -> None:
        self.amqp_url, self.seconds, self.every = amqp_url, seconds, every
        self.published: list[dict[str, Any]] = []
        self.sent_at: dict[str, float] = {}  # execution id -> when it was published (wall clock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="trickle", daemon=True)

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            await bifrost_worker.declare_queues(channel)
            while not self._stop.is_set():
                body = execution(self.seconds)
                message = aio_pika.Message(json.dumps(body).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await channel.default_exchange.publish(message, routing_key=QUEUE)
                self.published.append(body)
                self.sent_at[body["execution_id"]] = time.time()
                await asyncio.get_running_loop().run_in_executor(None, self._stop.wait, self.every)


def execution(seconds: float, **extra: Any) -> dict[str, Any]:
    return {"execution_id": uuid.uuid4().hex, "seconds": seconds, **extra}


def ready_messages(amqp_url: str, queue: str = QUEUE) -> int:
    async def go() -> int:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            declared = await (await connection.channel()).declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)

    return asyncio.run(go())


# --- the ledger the worker keeps ----------------------------------------------------------------


@dataclass
class Ledger:
    redis_url: str

    def _list(self, key: str) -> list[dict[str, Any]]:
        r = redis.Redis.from_url(self.redis_url)
        try:
            return [json.loads(x) for x in r.lrange(key, 0, -1)]
        finally:
            r.close()

    def deliveries(self) -> list[dict[str, Any]]:
        return self._list(bifrost_worker.DELIVERIES)

    def results(self) -> list[dict[str, Any]]:
        return self._list(bifrost_worker.RESULTS)

    def commands(self) -> list[dict[str, Any]]:
        return self._list(bifrost_worker.COMMANDS)

    def finished(self) -> set[str]:
        return {r["execution_id"] for r in self.results()}


# --- in pods ------------------------------------------------------------------------------------


def configmap(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": namespace},
        "data": {"worker.py": SCRIPT.read_text()},
    }


def worker_container(image: str, **env: Any) -> dict[str, Any]:
    """The worker container as a Bifrost template would give it (here: our image running the script)."""
    return {
        "name": "worker",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python", f"{MOUNT}/worker.py"],
        "env": [{"name": k, "value": str(v)} for k, v in env.items()],
        "volumeMounts": [{"name": "bifrost-wire", "mountPath": MOUNT, "readOnly": True}],
    }


def worker_template(image: str, **env: Any) -> dict[str, Any]:
    return {
        "spec": {
            "containers": [worker_container(image, **env)],
            "volumes": [{"name": "bifrost-wire", "configMap": {"name": CONFIGMAP}}],
        }
    }


def pool_manifest(name: str, redis_url: str, image: str, **spec: Any) -> dict[str, Any]:
    """A `protocol: bifrost` WorkerPool whose RabbitMQ URL is in the Secret `rabbitmq` (key `url`)."""
    body: dict[str, Any] = {
        "protocol": "bifrost",
        "minWorkers": 1,
        "maxWorkers": 3,
        "processes": {"max": 2},
        "heartbeatIntervalSeconds": 1,
        "gracefulShutdownSeconds": 1,
        "executionTimeoutSeconds": 60,
        "scaling": {"scaleDownDelaySeconds": 3},
        "redis": {"url": redis_url},
        "rabbitmq": {"urlSecretRef": {"name": "rabbitmq", "key": "url"}, "queues": [QUEUE]},
        "template": worker_template(image),
    }
    body.update(spec)
    return {"apiVersion": "bifrost.dev/v1alpha1", "kind": "WorkerPool", "metadata": {"name": name}, "spec": body}


def lost(ledger: Ledger, workers: set[str] | None = None) -> list[dict[str, Any]]:
    """Deliveries (to `workers`, or any) that never got a result: executions lost."""
    finished = ledger.finished()
    mine = [d for d in ledger.deliveries() if workers is None or d["worker_id"] in workers]
    return [d for d in mine if d["execution_id"] not in finished]
