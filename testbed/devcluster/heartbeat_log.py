"""TEST INFRASTRUCTURE — every heartbeat on the seed's channel, stamped on arrival.

Stamped with time.monotonic(), as `devcluster.watch` stamps API events, so a
test can ask what a worker last said before its pod was seen being deleted.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis

from workerpool.contracts.names import HEARTBEAT_CHANNEL


class HeartbeatLog:
    def __init__(self, client: redis.Redis) -> None:
        self.beats: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(HEARTBEAT_CHANNEL)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="heartbeat-log", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            at = time.monotonic()
            beat = json.loads(message["data"])
            with self.lock:
                self.beats.append((at, beat))

    def last_before(self, worker_id: str, at: float) -> dict[str, Any] | None:
        """The worker's last heartbeat that arrived before `at` (None: it sent none)."""
        with self.lock:
            earlier = [b for t, b in self.beats if t < at and b.get("worker_id") == worker_id]
        return earlier[-1] if earlier else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()


def running(beat: dict[str, Any]) -> list[str]:
    """The executions a heartbeat shows running."""
    return [p["execution"]["execution_id"] for p in beat.get("processes", []) if p.get("execution")]
