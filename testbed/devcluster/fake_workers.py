"""TEST INFRASTRUCTURE — the workers of pods that run no container (pods on kwok nodes).

Each simulated worker does what the reference worker does on the seed's wire,
in Redis, with one process: it registers and heart-beats every `interval`
(the registration hash and the heartbeat channel), holds the id of the
execution it runs in its held set (what the operator's retire and eviction
scripts read), and claims nothing once the operator marked it retiring. An
execution has a known length; it ends by the clock, and its end is recorded,
so a test can compare every pod deletion with what the pod was running.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass

import redis

from workerpool.contracts import names

from .heartbeats import heartbeat_payload


@dataclass
class Running:
    execution_id: str
    started: dt.datetime
    began: float  # time.monotonic(), as devcluster.watch stamps events
    ends_at: float


@dataclass(frozen=True)
class Finished:
    pod: str
    execution_id: str
    began: float  # time.monotonic()
    at: float


class FakeWorkers:
    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        interval: float = 1.0,
        queue_key: str = names.DEFAULT_QUEUE_KEY,
    ) -> None:
        self.r, self.namespace, self.interval, self.queue_key = client, namespace, interval, queue_key
        self.started = dt.datetime.now(dt.UTC)
        self.pools: dict[str, str] = {}  # pod -> its pool
        self.running: dict[str, Running] = {}
        self.finished: list[Finished] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the test drives -----------------------------------------------------------

    def set_pods(self, pools: dict[str, str]) -> None:
        """The live pods (name -> pool): new ones start heart-beating, gone ones go offline."""
        with self.lock:
            gone = self.pools.keys() - pools.keys()
            self.pools = dict(pools)
        if gone:
            self.r.delete(*(names.worker_key(p) for p in gone))

    def run(self, pod: str, seconds: float) -> str | None:
        """Claim an execution of `seconds` on `pod`'s worker; None when it claims no more (retiring, busy)."""
        with self.lock:
            if pod not in self.pools or pod in self.running or self.r.exists(names.worker_retiring_key(pod)):
                return None
            eid = f"e-{uuid.uuid4().hex[:10]}"
            self.r.sadd(names.held_key(self.queue_key, pod), eid)
            now = time.monotonic()
            self.running[pod] = Running(eid, dt.datetime.now(dt.UTC), now, now + seconds)
        self.beat()  # a real worker's heartbeat follows its claim at once
        return eid

    def start(self) -> FakeWorkers:
        self._thread = threading.Thread(target=self._loop, name="fake-workers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the workers ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Finish what is due, then every worker's registration and heartbeat (one pipeline)."""
        now = time.monotonic()
        with self.lock:
            due = [pod for pod, run in self.running.items() if run.ends_at <= now]
            for pod in due:
                ended = self.running.pop(pod)
                self.r.srem(names.held_key(self.queue_key, pod), ended.execution_id)
                self.finished.append(Finished(pod, ended.execution_id, ended.began, now))
            beats = [(pod, pool, self.running.get(pod)) for pod, pool in self.pools.items()]
        ttl = max(3, int(3 * self.interval))
        with self.r.pipeline(transaction=False) as p:
            for pod, pool, run in beats:
                execution = (run.execution_id, run.started) if run is not None else None
                busy = run is not None
                key, fields, payload = heartbeat_payload(pod, busy, self.started, pool, self.namespace, execution)
                p.hset(key, mapping=fields)  # type: ignore[arg-type]
                p.expire(key, ttl)
                p.publish(names.HEARTBEAT_CHANNEL, payload)
            p.execute()

    def running_at(self, pod: str, at: float) -> str | None:
        """The execution `pod` ran at time.monotonic() `at` (None: it ran none then)."""
        with self.lock:
            run = self.running.get(pod)
            if run is not None and run.began <= at:
                return run.execution_id
            return next((d.execution_id for d in self.finished if d.pod == pod and d.began <= at < d.at), None)
