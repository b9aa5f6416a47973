"""A pool controller driven through a whole scenario with in-memory fakes of its
ports (the API server, the Redis hub, the clock), in virtual time: a burst,
the scale-down window, a recycle (also across a restart), a Redis outage.

Only the orchestration is under test here; the real API server and Redis are
in the e2e and integration tests."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devcluster.heartbeats import heartbeat
from workerpool.contracts.resource import LastRecycle, RecycleResult
from workerpool.contracts.wire import QueueStatus
from workerpool.controller.adapters.kube import ApiException
from workerpool.controller.admission.evictions import EvictionGate
from workerpool.controller.fleet.pod_index import PodIndex
from workerpool.controller.loop.controller import PoolController
from workerpool.controller.ports import Fault, PoolDeps, PublishOnce, Subscriber
from workerpool.decide.recycle import dedupe_key
from workerpool.protocols.seed import heartbeat_report
from workerpool.redis_connect import Problem, RedisAccess

from .. import clocks

NS, POOL, UID = "team", "p", "pool-uid"
QUEUE = "bifrost:queue:pending"
STARTED = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


class FakeClock(clocks.FakeClock):
    def __init__(self) -> None:
        super().__init__(wall=STARTED.timestamp())


class FakeKube:
    """Pods and status in memory; a created pod is Running and Ready at once."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.status: dict[str, Any] = {}
        self.status_writes = 0
        self.patches: list[dict[str, Any]] = []
        self.status_turn: Callable[[], Awaitable[None]] | None = None
        self.mark_turn: Callable[[], Awaitable[None]] | None = None
        self.unmark_turn: Callable[[], Awaitable[None]] | None = None
        self.events: list[tuple[str, str]] = []
        self.marks: list[tuple[str, dict[str, str | None]]] = []  # every annotation patch, in order
        self.refuse_creates = False  # as Pod Security or a quota would
        self.creates_tried = 0
        self.urgent_writes = 0
        self.conditions_set: list[tuple[str, str]] = []  # (pod, condition type), every status patch
        self._ids = itertools.count(1)

    async def list_pods(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for p in self.pods.values()]

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.creates_tried += 1
        if self.refuse_creates:
            raise ApiException(status=403, reason="Forbidden")
        n = next(self._ids)
        pod = copy.deepcopy(body)
        pod["metadata"].update(name=f"{POOL}-{n}", uid=f"pod-uid-{n}", creationTimestamp=STARTED.isoformat())
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        self.pods[pod["metadata"]["name"]] = pod
        return copy.deepcopy(pod)

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        del self.pods[name]
        self.deleted.append(name)

    async def patch_status(
        self, namespace: str, name: str, status: Callable[[], dict[str, Any] | None], urgent: bool = False
    ) -> bool:
        self.urgent_writes += urgent
        if self.status_turn is not None:
            await self.status_turn()  # the write waits for its turn (the rate limiter's queue)
        patch = status()
        if patch is None:
            return False
        self.status_writes += 1
        self.patches.append(patch)
        for key, value in patch.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = value
        return True

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        return None

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        await self.mark_pod(namespace, name, dict(annotations))

    async def mark_pod(
        self,
        namespace: str,
        name: str,
        patch: dict[str, str | None],
        still: Callable[[], bool] | None = None,
    ) -> dict[str, Any] | None:
        if self.mark_turn is not None:
            await self.mark_turn()  # the mark waits for its turn (the rate limiter's queue)
        if self.unmark_turn is not None and all(v is None for v in patch.values()):
            await self.unmark_turn()  # a removal's turn comes after every status write
        if still is not None and not still():
            return None
        self.marks.append((name, dict(patch)))
        pod = self.pods.get(name)
        if pod is None:
            return None
        annotations = pod["metadata"].setdefault("annotations", {})
        for key, value in patch.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return copy.deepcopy(pod)

    async def set_pod_condition(self, namespace: str, name: str, condition: dict[str, str]) -> dict[str, Any] | None:
        self.conditions_set.append((name, condition["type"]))
        pod = self.pods.get(name)
        if pod is None:
            return None
        kept = [c for c in pod["status"]["conditions"] if c["type"] != condition["type"]]
        pod["status"]["conditions"] = [*kept, dict(condition)]
        return copy.deepcopy(pod)

    async def event(self, pool: dict[str, str], type_: str, reason: str, message: str) -> None:
        self.events.append((reason, message))


class FakeCommands:
    has_handshake = True

    def __init__(self) -> None:
        self.retired: list[str] = []
        self.published: list[list[tuple[str, int | None]]] = []
        self.dedupe: dict[str, str] = {}
        self.deaf: set[str] = set()  # channels with no subscriber (the script then sends nothing)

    async def retire(self, worker_id: str, queue_key: str, ttl_seconds: int) -> bool:
        self.retired.append(worker_id)
        return True

    async def unretire(self, worker_id: str, queue_key: str) -> None:
        self.retired.remove(worker_id)

    async def publish_once(
        self, dedupe_key: str, record: str, messages: list[tuple[str, str]], ttl_seconds: int
    ) -> PublishOnce:
        if dedupe_key in self.dedupe:
            return PublishOnce("handled_before", self.dedupe[dedupe_key])
        if deaf := [channel for channel, _ in messages if channel in self.deaf]:
            return PublishOnce("not_listening", record, tuple(deaf))
        self.dedupe[dedupe_key] = record
        # The seed's command, decoded: (the worker its channel names, the pid).
        self.published.append([(channel.split(":")[1], json.loads(message)["pid"]) for channel, message in messages])
        return PublishOnce("published", record)


class FakeHub:
    def __init__(self) -> None:
        self.error: str | None = None
        self.queue_error: str | None = None
        self.depth: int | None = None
        self.commands = FakeCommands()
        self.sub: Subscriber | None = None
        self.shared: tuple[tuple[str, str], ...] = ()  # pools whose workers may report under our pods' names

    def subscribe(self, sub: Subscriber) -> None:
        self.sub = sub

    def names_shared_with(self, namespace: str, name: str) -> tuple[tuple[str, str], ...]:
        return self.shared

    @property
    def fault(self) -> Fault | None:
        return Fault(Problem.UNAVAILABLE, self.error) if self.error is not None else None

    @property
    def worker_fault(self) -> Fault | None:
        return self.fault

    def queue_fault(self, key: str) -> str | None:
        return self.queue_error

    def queue(self, key: str) -> QueueStatus | None:
        if self.error is not None or self.depth is None:
            return None
        return QueueStatus(depth=self.depth, oldest_age_seconds=0.0)

    def hub_for(self, access: RedisAccess, protocol: str) -> FakeHub:
        return self

    def release_hub(self, access: RedisAccess, protocol: str, namespace: str, name: str) -> None:
        self.sub = None


class NoBrokers:
    """A seed pool asks no broker."""

    def broker_for(self, access: Any) -> Any:
        raise AssertionError("a seed pool asked for a RabbitMQ broker")

    def release_broker(self, access: Any, namespace: str, name: str) -> None:
        raise AssertionError("a seed pool released a RabbitMQ broker")


class World:
    """The fakes, and the controller under test with a way to restart it."""

    def __init__(self) -> None:
        self.clock, self.kube, self.hub = FakeClock(), FakeKube(), FakeHub()
        self.body: dict[str, Any] = {
            "apiVersion": "bifrost.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": POOL, "namespace": NS, "uid": UID, "generation": 1, "annotations": {}},
            "spec": {
                "minWorkers": 1,
                "maxWorkers": 3,
                "processes": {"min": 1, "max": 2},
                "heartbeatIntervalSeconds": 1,
                "redis": {"url": "redis://redis:6379/0"},
                "scaling": {"scaleDownDelaySeconds": 10},
            },
        }
        self.ctl = self.new_controller()

    def new_controller(self) -> PoolController:
        deps = PoolDeps(
            kube=self.kube,
            hubs=self.hub,
            brokers=NoBrokers(),
            worker_image="img",
            status_min_interval=1.0,
            status_volatile_refresh=30.0,
            clock=self.clock,
        )
        body = copy.deepcopy(self.body)
        body["status"] = copy.deepcopy(self.kube.status)
        return PoolController(deps, body)

    async def reconcile(self) -> None:
        """One reconcile and its status write, then the pool's watch event with the status it wrote
        (as Kopf delivers it)."""
        await self.ctl.reconcile()
        await self.ctl.settled()
        body = copy.deepcopy(self.body)
        body["status"] = copy.deepcopy(self.kube.status)
        self.ctl.on_body(body)

    @property
    def sub(self) -> Subscriber:
        assert self.hub.sub is not None
        return self.hub.sub

    def beat(self, busy: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Every live pod's worker reports (as pub/sub would deliver it now)."""
        for name in self.kube.pods:
            self.sub.listener.on_heartbeat(heartbeat_report(heartbeat(name, name in busy, STARTED, POOL, NS)))

    def watch_deletions(self) -> None:
        for name in self.kube.deleted:
            self.ctl.state.on_pod("DELETED", {"metadata": {"name": name}})

    def events(self, reason: str) -> list[str]:
        return [m for r, m in self.kube.events if r == reason]

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.kube.status["conditions"] if c["type"] == type_)


@pytest.fixture
def world() -> World:
    return World()


async def test_burst_scale_down_recycle_and_outage(world: World) -> None:
    # A new pool: minWorkers before the first queue reading, no status before the first resync.
    await world.reconcile()
    assert len(world.kube.pods) == 1
    assert world.events("ScalingUp") == ["Creating 1 workers (minWorkers 1); demand not read yet"]
    assert world.kube.status_writes == 0
    world.hub.depth = 0
    world.sub.listener.on_resync(set(), {})
    world.beat()
    await world.reconcile()
    assert world.kube.status["readyWorkers"] == 1
    assert world.condition("Ready")["status"] == "True"

    # A burst: 1 busy + 5 queued with 2 processes per worker -> 3 workers, at once.
    (first,) = world.kube.pods
    world.hub.depth = 5
    world.beat(busy={first})
    await world.reconcile()
    assert len(world.kube.pods) == 3
    assert "Scaling up from 1 to 3 workers" in world.events("ScalingUp")[-1]

    # Demand gone: nothing is removed inside the scale-down window...
    world.hub.depth = 0
    for _ in range(3):
        world.clock.advance(3)
        world.beat()
        await world.reconcile()
    assert world.kube.deleted == []
    # ...and after it, only idle workers, each retired in Redis before its pod goes.
    world.clock.advance(3)
    world.beat()
    await world.reconcile()
    assert len(world.kube.deleted) == 2
    assert world.hub.commands.retired == world.kube.deleted
    assert "(idle)" in world.events("ScalingDown")[-1]
    world.watch_deletions()

    # A recycle by annotation: published once, recorded in the status.
    (kept,) = world.kube.pods
    world.body["metadata"]["annotations"]["bifrost.dev/recycle"] = f"{kept}:4242"
    world.ctl.on_body(copy.deepcopy(world.body))
    world.beat()
    await world.reconcile()
    world.clock.advance(1)  # the write policy: at most one status write a second
    await world.reconcile()
    assert world.hub.commands.published == [[(kept, 4242)]]
    assert world.kube.status["lastRecycle"]["request"] == f"{kept}:4242"
    # A restarted operator (status and dedupe record survive) does not publish it again.
    world.ctl = world.new_controller()
    await world.reconcile()
    world.sub.listener.on_resync({kept}, {})
    world.beat()
    await world.reconcile()
    assert world.hub.commands.published == [[(kept, 4242)]]

    # Redis goes away: Stalled at once, nothing deleted, and the status written on the
    # flip and then no more often than the slow refresh.
    world.hub.error = "ConnectionError: connection refused"
    world.clock.advance(1)
    await world.reconcile()
    stalled = world.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "RedisUnavailable")
    writes = world.kube.status_writes
    for _ in range(60):  # 60 s of outage, a reconcile a second
        world.clock.advance(1)
        await world.reconcile()
    assert world.kube.status_writes - writes <= 2  # at most the slow refresh (30 s)
    assert len(world.kube.pods) == 1 and world.hub.commands.retired == world.kube.deleted

    # Back: Stalled clears.
    world.hub.error = None
    world.beat()
    world.clock.advance(1)
    await world.reconcile()
    assert world.condition("Stalled")["status"] == "False"
    assert json.dumps(world.kube.status).count("redis://") == 0


class RefusingResponse:
    """What the REST client hands ApiException for a refused request."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.reason, self.data = status, "refused", b"{}"
        self.headers = headers

    def getheaders(self) -> dict[str, str]:
        return self.headers


def refuse_status_writes(world: World, status: int, headers: dict[str, str]) -> None:
    async def refused(namespace: str, name: str, body: object, urgent: bool = False) -> bool:
        raise ApiException(http_resp=RefusingResponse(status, headers))

    world.kube.patch_status = refused  # type: ignore[method-assign]


def refuse_creates(world: World, status: int, headers: dict[str, str]) -> None:
    async def refused(namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        raise ApiException(http_resp=RefusingResponse(status, headers))

    world.kube.create_pod = refused  # type: ignore[method-assign]


async def ready_pool(world: World) -> None:
    world.hub.depth = 0
    await world.ctl.run_round()
    world.sub.listener.on_resync(set(), {})
    world.beat()


async def test_a_429s_retry_after_is_the_wait_before_the_next_round(world: World) -> None:
    await ready_pool(world)
    world.hub.depth = 3  # every round wants more workers...
    refuse_creates(world, 429, {"Retry-After": "7"})  # ...and the API server refuses each create
    delays = [await world.ctl.run_round() for _ in range(3)]
    # Never sooner than the server asked, though the backoff's own first steps are shorter.
    assert all(d is not None and d >= 7 for d in delays)
    assert retry_gauge() == delays[-1]


async def test_errors_back_off_exponentially_with_bounded_jitter_and_reset_on_success(world: World) -> None:
    await ready_pool(world)
    world.hub.depth = 3
    refuse_creates(world, 500, {})
    delays = []
    for _ in range(10):
        world.clock.advance(1)
        world.beat()
        delay = await world.ctl.run_round()
        assert delay is not None
        delays.append(delay)
    for failures, delay in enumerate(delays, start=1):
        step = min(30.0, 2.0 ** (failures - 1))
        assert step / 2 <= delay <= step  # equal jitter: half fixed, half random
    assert max(delays) <= 30.0
    world.kube.create_pod = FakeKube.create_pod.__get__(world.kube)  # type: ignore[method-assign]
    assert await world.ctl.run_round() is None
    assert retry_gauge() == 0


def waiting_turn() -> tuple[asyncio.Event, Callable[[], Awaitable[None]]]:
    """A write's turn in the limiter's queue that comes when the event is set."""
    turn = asyncio.Event()

    async def behind_every_other_pool() -> None:
        await turn.wait()

    return turn, behind_every_other_pool


async def status_writes_held(world: World) -> asyncio.Event:
    """A ready pool whose status writes wait for their turn (behind every other pool's) until the
    event is set; a second later."""
    await ready_pool(world)
    await world.reconcile()
    turn, world.kube.status_turn = waiting_turn()
    world.clock.advance(1)
    return turn


async def test_a_round_never_waits_for_its_status_writes_turn(world: World) -> None:
    """The API server is behind: the pool's status write waits for its turn, and the pool's next
    rounds still create the pods they decide (a scale-up is not queued behind its own status)."""
    turn = await status_writes_held(world)
    world.beat(busy=set(world.kube.pods))
    # (a round that waited for the turn would never return: wait_for fails the test instead)
    await asyncio.wait_for(world.ctl.reconcile(), 5)  # a state change: its status write is queued
    written, workers = world.kube.status_writes, len(world.kube.pods)
    world.hub.depth = 3
    await asyncio.wait_for(world.ctl.reconcile(), 5)  # the queue grew: more workers, while the write still waits
    assert len(world.kube.pods) > workers and world.kube.status_writes == written
    turn.set()
    await world.ctl.status.settled()
    assert world.kube.status_writes == written + 1  # one write, of the newest state
    assert world.kube.status["queue"]["depth"] == 3 and world.kube.status["desiredWorkers"] == len(world.kube.pods)


async def test_a_write_handed_to_the_writer_leaves_no_past_due_time_to_spin_the_loop(world: World) -> None:
    """A change held back by the minimum interval sets when it is due; once the write is handed to
    the writer (waiting for its turn), that time must not stay behind: past, it made the pool's
    loop run rounds with zero timeouts (a whole core at 1000 pools in bench/scale_bench.py)."""
    await ready_pool(world)
    await world.reconcile()
    (pod,) = world.kube.pods
    turn, world.kube.status_turn = waiting_turn()
    world.clock.advance(0.5)
    world.beat(busy={pod})
    await asyncio.wait_for(world.ctl.reconcile(), 5)  # within the minimum interval: held back
    assert world.ctl.status.next_write_at is not None
    world.clock.advance(1)
    await asyncio.wait_for(world.ctl.reconcile(), 5)  # due: handed to the writer, which waits
    assert world.ctl.status.next_write_at is None
    turn.set()
    await world.ctl.settled()


async def test_a_failed_status_write_is_sent_again_after_the_servers_retry_after_with_the_newest_state(
    world: World,
) -> None:
    await ready_pool(world)
    await world.reconcile()
    slept: list[float] = []
    refused_before = errors("api429")
    refuse_status_writes(world, 429, {"Retry-After": "7"})

    async def sleep(seconds: float) -> None:  # the server is back after the wait; the pool changed meanwhile
        slept.append(seconds)
        world.clock.advance(seconds)
        world.kube.patch_status = FakeKube.patch_status.__get__(world.kube)  # type: ignore[method-assign]
        world.hub.depth = 2

    world.ctl.status.sleep = sleep
    world.clock.advance(1)
    world.hub.depth = 1
    assert await world.ctl.run_round() is None  # the round itself does not fail
    await world.ctl.status.settled()
    assert slept == [7.0]
    assert world.kube.status["queue"]["depth"] == 2  # what was current when it went, not when it failed
    assert errors("api429") == refused_before + 1


async def test_a_pool_that_stops_drops_its_pending_status_write(world: World) -> None:
    """Leadership lost while a write waits for its turn: this replica writes nothing more."""
    turn = await status_writes_held(world)
    world.hub.depth = 2
    await world.ctl.reconcile()
    written = world.kube.status_writes
    await world.ctl.pause()
    turn.set()
    await world.ctl.status.settled()
    assert world.kube.status_writes == written


def errors(reason: str) -> float:
    labels = {"namespace": NS, "pool": POOL, "reason": reason}
    return REGISTRY.get_sample_value("workerpool_reconcile_errors_total", labels) or 0.0


def retry_gauge() -> float | None:
    return REGISTRY.get_sample_value("workerpool_reconcile_retry_delay_seconds", {"namespace": NS, "pool": POOL})


async def test_a_silent_worker_is_noticed_without_any_event(world: World) -> None:
    """Its pool wakes when the heartbeat window runs out, and the status says so."""
    await ready_pool(world)
    await world.reconcile()
    assert world.kube.status["readyWorkers"] == 1
    due = world.ctl.next_scale_check_at
    assert due is not None and due - world.clock.mono <= 2 * 1 + 2 + 0.1  # 2 heartbeats + 2 s
    world.clock.advance(due - world.clock.mono)  # no heartbeat came
    await world.reconcile()
    ready = world.condition("Ready")
    assert world.kube.status["readyWorkers"] == 0 and "no fresh heartbeat" in ready["message"]


async def test_a_status_write_that_waits_its_turn_carries_the_state_current_when_it_goes(world: World) -> None:
    """Queued behind the API budget, the write is re-rendered: no status older than its queue wait."""
    await ready_pool(world)
    await world.reconcile()
    (worker,) = world.kube.pods
    written = world.kube.status_writes

    async def turn_during_which_the_worker_turns_busy() -> None:
        world.clock.advance(2)
        world.beat(busy={worker})

    world.kube.status_turn = turn_during_which_the_worker_turns_busy
    world.clock.advance(1)
    world.hub.depth = 3  # the round sees the queue grow while the worker is still idle...
    await world.reconcile()
    # ...and its one write shows the worker busy, as it was when the write went out.
    assert world.kube.status_writes == written + 1
    details = {w["workerId"]: w for w in world.kube.status["workerDetails"]}
    assert details[worker]["busyCount"] == 1


async def test_a_status_write_waiting_its_turn_shows_since_when_in_a_gauge(world: World) -> None:
    """workerpool_status_pending_since_seconds: when the waiting write was decided, 0 once it went."""
    await ready_pool(world)
    await world.reconcile()
    labels = {"namespace": NS, "pool": POOL}
    seen: list[float | None] = []

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("workerpool_status_pending_since_seconds", labels)

    async def turn() -> None:
        seen.append(gauge())
        world.clock.advance(5)

    world.kube.status_turn = turn
    world.clock.advance(1)
    world.hub.depth = 3
    await world.reconcile()
    assert seen and seen[0] == pytest.approx(world.clock.time() - 5)  # set before the wait
    assert gauge() == 0


async def test_a_write_whose_change_was_undone_while_it_waited_is_not_sent(world: World) -> None:
    await ready_pool(world)
    await world.reconcile()
    (worker,) = world.kube.pods
    written = world.kube.status_writes
    world.clock.advance(1)
    world.beat(busy={worker})

    async def turn_during_which_it_turns_idle_again() -> None:
        world.clock.advance(1)
        world.beat()

    world.kube.status_turn = turn_during_which_it_turns_idle_again
    await world.reconcile()
    assert world.kube.status_writes == written


def histogram(name: str) -> tuple[float, float]:
    labels = {"namespace": NS, "pool": POOL}
    count = REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0
    return count, REGISTRY.get_sample_value(f"{name}_sum", labels) or 0.0


async def test_cold_start_and_scale_up_reaction_are_measured(world: World) -> None:
    cold0, reaction0 = (
        histogram("workerpool_cold_start_seconds"),
        histogram("workerpool_scale_up_reaction_seconds"),
    )
    await ready_pool(world)  # creates the first worker, which reports at once
    world.hub.depth = 5
    world.ctl.poke()  # the queue grew...
    world.clock.advance(0.25)
    await world.reconcile()  # ...and the round that creates the pods runs a quarter second later
    new = [name for name in world.kube.pods if name not in world.ctl.state.workers]
    assert len(new) == 2
    world.clock.advance(4)
    world.beat()  # the new workers' first reports, 4 s after their pods were created
    world.beat()  # (a second report is not a second cold start)
    cold, reaction = (
        histogram("workerpool_cold_start_seconds"),
        histogram("workerpool_scale_up_reaction_seconds"),
    )
    assert cold[0] - cold0[0] == 3  # the first worker (0 s) and the two new ones
    assert cold[1] - cold0[1] == pytest.approx(8.0)
    assert reaction[0] - reaction0[0] == 1  # the burst's round (the first round had no trigger to time)
    assert reaction[1] - reaction0[1] == pytest.approx(0.25)


async def test_a_recycle_a_previous_run_handled_never_shows_this_runs_record(world: World) -> None:
    """Killed after publishing, before writing the status: the next run decides the same value
    (here: rejected, its target gone), finds the previous run's record in Redis, and the
    status shows that record from its first write on, never its own rejection."""
    await world.reconcile()
    world.hub.depth = 0
    world.sub.listener.on_resync(set(), {})
    world.beat()
    await world.reconcile()
    value = "gone-worker@1"
    previous = LastRecycle(
        request=value,
        handled_at=STARTED,
        results=[RecycleResult(worker_id="gone-worker", pid=None, status="recycle_requested")],
    )
    world.hub.commands.dedupe[dedupe_key(UID, value)] = previous.model_dump_json()
    world.body["metadata"]["annotations"] = {"bifrost.dev/recycle": value}
    world.body["metadata"]["generation"] = 2
    world.ctl.on_body(copy.deepcopy(world.body) | {"status": copy.deepcopy(world.kube.status)})
    world.clock.advance(2)  # past the status write interval: this round writes
    await world.reconcile()
    written = [p["lastRecycle"] for p in world.kube.patches if p.get("lastRecycle", {}).get("request") == value]
    assert written, "the record was written"
    assert all(r["results"][0]["status"] == "recycle_requested" for r in written), written
    assert world.hub.commands.published == []  # and nothing published again


async def test_a_recycle_waits_for_its_worker_to_listen_then_is_sent_once(world: World) -> None:
    """Right after a failover a worker is between subscriptions, and a PUBLISH then reaches
    no one: the recycle is neither sent nor recorded, the status keeps the last record, one
    Event tells why, and a round a second later sends it, once, when the worker listens."""
    await world.reconcile()
    world.hub.depth = 0
    world.sub.listener.on_resync(set(), {})
    world.beat()
    await world.reconcile()
    (worker,) = world.kube.pods
    world.hub.commands.deaf = {f"worker:{worker}:commands"}
    world.body["metadata"]["annotations"] = {"bifrost.dev/recycle": f"{worker}@after-failover"}
    world.ctl.on_body(copy.deepcopy(world.body) | {"status": copy.deepcopy(world.kube.status)})
    for _ in range(3):
        world.clock.advance(2)
        world.beat()
        await world.reconcile()
    assert world.hub.commands.published == []
    assert "lastRecycle" not in world.kube.status
    assert world.events("RecycleWaiting") == [
        f"recycle '{worker}@after-failover' waits: {worker} not subscribed to its commands channel "
        "(reconnecting to Redis?); nothing is sent until every target listens, then once"
    ]
    assert world.ctl.next_scale_check_at is not None
    assert world.ctl.next_scale_check_at <= world.clock.monotonic() + 1.0

    world.hub.commands.deaf = set()  # the worker resubscribed
    for _ in range(2):
        world.clock.advance(2)
        world.beat()
        await world.reconcile()
    assert world.hub.commands.published == [[(worker, None)]]
    assert world.kube.status["lastRecycle"]["request"] == f"{worker}@after-failover"


async def test_a_refused_create_backs_off_is_told_once_and_is_retried_at_once_on_a_spec_change(
    world: World,
) -> None:
    """Before: every round tried the create again (at pod-create priority, in the write budget
    every pool shares) and posted a PodCreateRejected Event each time."""
    world.kube.refuse_creates = True
    for _ in range(20):  # 20 rounds in 20 s
        await world.reconcile()
        world.clock.advance(1)
    assert world.kube.creates_tried == 2  # at 0 s and after the first backoff (10 s), not 20
    assert len(world.events("PodCreateRejected")) == 1
    assert world.ctl.state.create_error is not None

    world.kube.refuse_creates = False
    world.body["metadata"]["generation"] = 2  # the template fixed
    world.ctl.on_body(copy.deepcopy(world.body) | {"status": copy.deepcopy(world.kube.status)})
    await world.reconcile()
    assert world.kube.creates_tried == 3 and len(world.kube.pods) == 1
    assert world.ctl.state.create_error is None


async def test_an_eviction_while_redis_cannot_be_trusted_is_held_without_asking_it(world: World) -> None:
    """During a failover (or the resync after it) what Redis says now may miss what the old
    primary took with it: the eviction of a running worker is held, and Redis is not asked."""
    await world.reconcile()
    world.hub.depth = 0
    world.sub.listener.on_resync(set(), {})
    world.beat()
    await world.reconcile()
    (pod,) = world.kube.pods
    world.ctl.state.on_pod("MODIFIED", copy.deepcopy(world.kube.pods[pod]) | {"status": {"phase": "Running"}})
    asked: list[str] = []

    async def retire_for_eviction(worker_id: str, queue_key: str, ttl_seconds: int) -> list[str]:
        asked.append(worker_id)
        return []  # Redis (the new primary) says: holds nothing

    world.hub.commands.retire_for_eviction = retire_for_eviction  # type: ignore[attr-defined]
    commands = world.hub.commands
    index = PodIndex({(NS, POOL): world.ctl})
    index.on_pod("MODIFIED", NS, pod, POOL)
    gate = EvictionGate(index, lambda a, p: commands, world.kube, world.clock)  # type: ignore[arg-type]

    world.hub.error = "heartbeat subscription failed: the Redis primary is unreachable or being replaced"
    verdict = await gate.review(NS, pod, dry_run=False)
    assert verdict is not None and not verdict.allowed, verdict
    assert asked == [], "Redis was asked while it could not be trusted"

    world.hub.error = None  # trusted again: Redis is asked, and an idle worker may go
    verdict = await gate.review(NS, pod, dry_run=False)
    assert verdict is not None and verdict.allowed and asked == [pod]


async def test_a_held_eviction_ends_at_the_pools_limit_from_its_first_hold(world: World) -> None:
    """A hold has a limit: from the first hold (stamped once on the pod), the longest a running
    execution may take (executionTimeoutSeconds + gracefulShutdownSeconds); past it the eviction
    is allowed with a Warning, so a drain never waits forever (here, on a Redis that never returns)."""
    await world.reconcile()
    world.hub.depth = 0
    world.sub.listener.on_resync(set(), {})
    world.beat()
    await world.reconcile()
    (pod,) = world.kube.pods
    world.ctl.state.on_pod("MODIFIED", copy.deepcopy(world.kube.pods[pod]) | {"status": {"phase": "Running"}})
    index = PodIndex({(NS, POOL): world.ctl})
    index.on_pod("MODIFIED", NS, pod, POOL)
    gate = EvictionGate(index, lambda a, p: world.hub.commands, world.kube, world.clock)  # type: ignore[arg-type]
    world.hub.error = "ConnectionError: connection refused"  # nothing can confirm what it runs

    verdict = await gate.review(NS, pod, dry_run=False)
    assert verdict is not None and not verdict.allowed
    await asyncio.gather(*gate._recording)
    (first,) = [p for n, p in world.kube.marks if n == pod and "bifrost.dev/evicting-since" in p]
    world.ctl.state.on_pod("MODIFIED", copy.deepcopy(world.kube.pods[pod]) | {"status": {"phase": "Running"}})
    limit = 300 + 5  # the pool's executionTimeoutSeconds and gracefulShutdownSeconds (their defaults)
    world.clock.advance(limit - 1)
    verdict = await gate.review(NS, pod, dry_run=False)
    assert verdict is not None and not verdict.allowed, "allowed before the limit"
    await asyncio.gather(*gate._recording)
    world.ctl.state.on_pod("MODIFIED", copy.deepcopy(world.kube.pods[pod]) | {"status": {"phase": "Running"}})
    assert (
        world.ctl.state.pods[pod].evicting_since
        == dt.datetime.fromisoformat(first["bifrost.dev/evicting-since"]).timestamp()
    ), "the first hold is stamped once"
    world.clock.advance(2)
    verdict = await gate.review(NS, pod, dry_run=False)
    assert verdict is not None and verdict.allowed and verdict.event.reason == "EvictionHoldExpired"


MARKED = {"karpenter.sh/do-not-disrupt": "true", "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
UNMARKED = dict.fromkeys(MARKED)


async def beat_and_reconcile(world: World, seconds: int, busy: Callable[[int], bool]) -> None:
    """`seconds` rounds a second apart, each after a heartbeat of the one pod (busy when `busy(i)`)."""
    (pod,) = world.kube.pods
    for i in range(seconds):
        world.clock.advance(1)
        world.beat(busy={pod} if busy(i) else set())
        await world.reconcile()


async def test_a_busy_worker_is_marked_at_once_and_unmarked_after_the_hold_down(world: World) -> None:
    await ready_pool(world)
    await world.reconcile()
    (pod,) = world.kube.pods
    assert world.kube.marks == []  # idle from the start: never marked
    world.beat(busy={pod})
    await world.reconcile()
    assert world.kube.marks == [(pod, MARKED)]
    assert world.kube.pods[pod]["metadata"]["annotations"].items() >= MARKED.items()
    # Work that comes and goes every second for five minutes: no write at all.
    await beat_and_reconcile(world, 300, busy=lambda i: i % 2 == 0)
    assert world.kube.marks == [(pod, MARKED)]
    # Idle for one second short of the hold-down (60 s): still marked; then removed once.
    await beat_and_reconcile(world, 59, busy=lambda i: False)
    assert len(world.kube.marks) == 1
    due = world.ctl.next_scale_check_at
    assert due is not None and due - world.clock.mono <= 1.1  # the pool wakes for it by itself
    await beat_and_reconcile(world, 2, busy=lambda i: False)
    assert world.kube.marks == [(pod, MARKED), (pod, UNMARKED)]
    assert not MARKED.keys() & world.kube.pods[pod]["metadata"]["annotations"].keys()


async def test_a_round_never_waits_for_its_marks_and_a_mark_on_its_way_is_not_sent_twice(world: World) -> None:
    await ready_pool(world)
    await world.reconcile()
    (pod,) = world.kube.pods
    turn, world.kube.mark_turn = waiting_turn()
    world.beat(busy={pod})
    await asyncio.wait_for(world.ctl.reconcile(), 5)  # the mark waits for its turn; the round does not
    world.clock.advance(1)
    world.hub.depth = 6
    await asyncio.wait_for(world.ctl.reconcile(), 5)  # the same mark decided again, and more workers
    assert len(world.kube.pods) > 1 and world.kube.marks == []
    turn.set()
    await world.ctl.settled()
    assert world.kube.marks == [(pod, MARKED)]  # once


async def test_a_mark_removal_still_waiting_when_its_worker_turns_busy_again_is_not_sent(world: World) -> None:
    """Removals wait behind every status write; one whose worker took work meanwhile would strip
    the protection from a busy pod: at its turn it is dropped, and the mark stays."""
    await ready_pool(world)
    await world.reconcile()
    (pod,) = world.kube.pods
    world.beat(busy={pod})
    await world.reconcile()
    assert world.kube.marks == [(pod, MARKED)]
    turn, world.kube.mark_turn = waiting_turn()
    for _ in range(61):  # idle past the hold-down: the removal is decided and waits for its turn
        world.clock.advance(1)
        world.beat()
        await asyncio.wait_for(world.ctl.reconcile(), 5)
    world.beat(busy={pod})  # busy again before the removal's turn
    turn.set()
    await world.ctl.settled()
    assert world.kube.marks == [(pod, MARKED)]
    assert world.kube.pods[pod]["metadata"]["annotations"].items() >= MARKED.items()


async def test_a_removal_waiting_its_turn_never_holds_back_another_pods_mark(world: World) -> None:
    await ready_pool(world)
    world.hub.depth = 3  # a second worker
    await world.reconcile()
    first, second = sorted(world.kube.pods)
    world.beat(busy={first})
    await world.reconcile()
    turn, world.kube.unmark_turn = waiting_turn()
    for _ in range(61):  # the first idle past the hold-down: its removal waits behind the status
        world.clock.advance(1)
        world.beat()
        await asyncio.wait_for(world.ctl.reconcile(), 5)
    world.beat(busy={second})
    await asyncio.wait_for(world.ctl.reconcile(), 5)
    for _ in range(50):  # let the mark's sender run (all in memory: a few loop iterations)
        await asyncio.sleep(0)
    assert (second, MARKED) in world.kube.marks and (first, UNMARKED) not in world.kube.marks
    turn.set()
    await world.ctl.settled()
    assert world.kube.marks == [(first, MARKED), (second, MARKED), (first, UNMARKED)]


async def test_an_unknown_worker_keeps_its_mark(world: World) -> None:
    """Redis cannot be trusted, then heartbeats stop: neither is idle, whatever the hold-down."""
    await ready_pool(world)
    (pod,) = world.kube.pods
    world.beat(busy={pod})
    await world.reconcile()
    world.hub.error = "connection refused"
    for _ in range(120):
        world.clock.advance(1)
        await world.reconcile()
    assert world.kube.marks == [(pod, MARKED)]
    world.hub.error = None
    world.sub.listener.on_resync({pod}, {})
    await beat_and_reconcile(world, 59, busy=lambda i: False)  # the hold-down starts again here
    assert world.kube.marks == [(pod, MARKED)]


async def test_marks_the_pod_template_sets_are_the_templates(world: World) -> None:
    world.body["spec"]["template"] = {"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}
    world.ctl = world.new_controller()
    await ready_pool(world)
    (pod,) = world.kube.pods
    world.beat(busy={pod})
    await world.reconcile()
    assert world.kube.marks == [(pod, {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"})]
    await beat_and_reconcile(world, 61, busy=lambda i: False)
    assert world.kube.marks[-1] == (pod, {"cluster-autoscaler.kubernetes.io/safe-to-evict": None})
    assert world.kube.pods[pod]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"


async def test_a_pods_readiness_gate_opens_once_when_its_worker_registers(world: World) -> None:
    await world.reconcile()  # the pool's first pod, its gate closed: Ready waits for the worker
    (pod,) = world.kube.pods
    assert world.kube.pods[pod]["spec"]["readinessGates"] == [{"conditionType": "bifrost.dev/worker-registered"}]
    await world.reconcile()
    assert world.kube.conditions_set == []  # a running container is no worker yet
    world.beat()
    await world.reconcile()
    assert world.kube.conditions_set == [(pod, "bifrost.dev/worker-registered")]
    world.clock.advance(60)  # its worker falls silent: the gate stays open (no flapping readiness)
    await world.reconcile()
    world.beat()
    await world.reconcile()
    assert world.kube.conditions_set == [(pod, "bifrost.dev/worker-registered")]
    # A kubelet stand-in that rewrites the condition list (kwok's) does not get a write every round.
    body = world.kube.pods[pod]
    body["status"]["conditions"] = [c for c in body["status"]["conditions"] if c["type"] == "Ready"]
    world.ctl.state.on_pod("MODIFIED", copy.deepcopy(body))
    world.beat()
    await world.reconcile()
    assert world.kube.conditions_set == [(pod, "bifrost.dev/worker-registered")]


async def test_the_round_that_publishes_a_recycle_writes_its_record_at_once_ahead_of_the_queue(world: World) -> None:
    await ready_pool(world)
    await world.reconcile()
    (worker,) = world.kube.pods
    world.body["metadata"]["annotations"] = {"bifrost.dev/recycle": f"{worker}@now"}
    world.ctl.on_body(copy.deepcopy(world.body) | {"status": copy.deepcopy(world.kube.status)})
    writes = world.kube.status_writes
    await world.reconcile()  # no clock advance: inside the status write interval
    assert world.hub.commands.published == [[(worker, None)]]
    assert world.kube.status_writes == writes + 1 and world.kube.urgent_writes == 1
    assert world.kube.status["lastRecycle"]["request"] == f"{worker}@now"
    await world.reconcile()  # nothing new: no second urgent write
    assert world.kube.urgent_writes == 1


async def test_workers_whose_names_another_pool_may_share_are_unknown_never_idle_nor_ready(world: World) -> None:
    """Same-named pools in two namespaces on one Redis server, with workers whose reports carry only
    the pod name: whose worker sent a heartbeat cannot be told, so none is trusted."""
    world.hub.depth = 0
    await world.reconcile()
    world.sub.listener.on_resync(set(), {})
    world.hub.depth = 3
    world.beat()
    await world.reconcile()
    grown = len(world.kube.pods)
    world.hub.shared = (("other-team", POOL),)
    world.hub.depth = 0  # no work: every worker idle by its reports, so the pool would shrink
    for _ in range(5):
        world.clock.advance(60)
        world.beat()
        await world.reconcile()
    assert world.kube.deleted == [] and len(world.kube.pods) == grown
    stalled = world.condition("Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "PodNamesShared"
    assert "other-team/p" in stalled["message"] and "rename a pool" in stalled["message"]
    assert world.condition("Ready")["status"] == "False"  # (the counts stay as last known, as in an outage)
    assert len(world.events("PodNamesShared")) >= 1
    world.hub.shared = ()  # the other pool renamed: trusted again, and the idle workers go
    for _ in range(5):
        world.clock.advance(60)
        world.beat()
        await world.reconcile()
        world.watch_deletions()
    assert world.kube.deleted and world.condition("Stalled")["status"] == "False"
