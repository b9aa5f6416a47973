"""The worker runtime against a real redis-server with real processes.

Covers the seed's list (pool starts with min, routes to idle, scales up when
all busy, scales down excess idle, timeout kills and replaces, crash detected
and replaced, recycle idle, cannot recycle busy, heartbeat schema, missing
context, execution error, SIGTERM, loops for multiple executions) plus the
lease guarantee: kill -9 of the whole worker mid-execution loses nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.harness import parse_samples
from devcluster.procs import free_port, listening_ports, pid_alive
from devcluster.redis_server import RedisServer
from workerpool.contracts.names import HEARTBEAT_CHANNEL, worker_key
from workerpool.contracts.wire import parse_heartbeat

from ..shapes import EXECUTION_KEYS, HEARTBEAT_KEYS, PROCESS_KEYS, RESULT_KEYS
from .workers import CHANGE, START, Client, HeartbeatTap, WorkerProcess, pids, states, wait_until

pytestmark = pytest.mark.redis

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def client(redis_server: RedisServer) -> Client:
    return Client(redis_server.url)


@pytest.fixture
def start_worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[StartWorker]:
    started: list[WorkerProcess] = []

    def start(**env: Any) -> WorkerProcess:
        w = WorkerProcess(redis_server.url, tmp_path, **env).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def ready(client: Client, w: WorkerProcess, size: int) -> list[int]:
    reg = client.wait_registration(
        w.worker_id, lambda r: states(r) == ["idle"] * size, f"{size} idle processes", timeout=START
    )
    return [p.pid for p in reg.info.processes]


def completed(heartbeat: dict[str, Any]) -> int:
    return sum(p["executions_completed"] for p in heartbeat["processes"])


def test_pool_starts_with_min(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=3, MAX_WORKERS=5)
    reg = client.wait_registration(w.worker_id, lambda r: r.info.pool_size == 3, "pool of 3", timeout=START)
    assert (reg.info.min_workers, reg.info.max_workers) == (3, 5)
    assert reg.info.idle_count == 3 and reg.info.busy_count == 0
    assert all(pid_alive(p.pid) for p in reg.info.processes)


def test_routes_to_idle_process(client: Client, start_worker: StartWorker) -> None:
    w = start_worker()
    tap = HeartbeatTap(client, w.worker_id)
    started = ready(client, w, 2)
    result = client.wait_result(client.submit("pid"))
    assert result.success and result.result in started
    assert result.worker_id == w.worker_id
    tap.until(lambda h: h["busy_count"] == 0 and completed(h) == 1, "the heartbeat after it")
    seen = {pid for h in tap.read() for pid in pids(h)}
    assert seen == set(started), "a new process was started although one was idle"
    tap.close()


def test_scales_up_when_all_busy_and_down_when_idle(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=3, PROCESS_IDLE_SECONDS=0.5)
    ready(client, w, 1)
    ids = [client.submit("sleep", {"seconds": 1.5}) for _ in range(3)]
    client.wait_registration(w.worker_id, lambda r: states(r) == ["busy"] * 3, "3 busy processes")
    assert all(client.wait_result(i).success for i in ids)
    client.wait_registration(w.worker_id, lambda r: states(r) == ["idle"], "back to 1 idle process")


def test_never_more_than_max(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=2)
    tap = HeartbeatTap(client, w.worker_id)
    ready(client, w, 1)
    ids = [client.submit("sleep", {"seconds": 0.5}) for _ in range(6)]
    assert all(client.wait_result(i).success for i in ids)
    tap.until(lambda h: h["busy_count"] == 0 and completed(h) == 6, "the heartbeat after all six")
    beats = tap.read()
    assert max(h["pool_size"] for h in beats) == 2, "it grew to max for the burst"
    assert all(h["pool_size"] <= 2 and len(h["processes"]) <= 2 for h in beats), [h["pool_size"] for h in beats]
    assert len({pid for h in beats for pid in pids(h)}) == 2, "a third process existed at some point"
    assert client.r.zcard("bifrost:queue:pending") == 0
    tap.close()


def test_timeout_kills_and_replaces(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1)
    (old_pid,) = ready(client, w, 1)
    result = client.wait_result(client.submit("hang", timeout=0.5))
    assert not result.success and result.error_type == "TimeoutError"
    assert "timeout of 0.5 s" in (result.error or "")
    wait_until(lambda: not pid_alive(old_pid), timeout=CHANGE, what="the timed-out process to be gone")
    (new_pid,) = ready(client, w, 1)
    assert new_pid != old_pid
    assert client.wait_result(client.submit("echo", {"x": 1})).result == {"x": 1}


def test_timeout_escalates_to_sigkill(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1, GRACEFUL_SHUTDOWN_SECONDS=0.5)
    (old_pid,) = ready(client, w, 1)
    # The timeout leaves the function time to ignore SIGTERM before it comes: a child slow to
    # start (0.5 s was not always enough on a loaded machine) would die of the SIGTERM itself.
    result = client.wait_result(client.submit("hang", {"ignore_sigterm": True}, timeout=2.0))
    assert result.error_type == "TimeoutError"
    assert not pid_alive(old_pid)
    assert result.duration_ms >= 2500  # 2 s timeout + 0.5 s graceful period before SIGKILL


def test_replacing_a_killed_process_never_exceeds_max(client: Client, start_worker: StartWorker) -> None:
    """A process that takes its graceful period to exit is not counted while it does, so
    new work may start a process meanwhile; its exit must then not add one beyond max."""
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1, GRACEFUL_SHUTDOWN_SECONDS=3)
    ready(client, w, 1)
    hung = client.submit("hang", {"ignore_sigterm": True}, timeout=2.0)  # time to ignore SIGTERM first
    client.wait_registration(w.worker_id, lambda r: states(r) == ["killed"], "the timed-out process stopping")
    assert client.wait_result(client.submit("echo", {"x": 1})).result == {"x": 1}  # on a new process
    assert client.wait_result(hung).error_type == "TimeoutError"  # reported when the old one exited
    reg = client.wait_registration(w.worker_id, lambda r: "killed" not in states(r), "the old process gone")
    assert reg.info.pool_size == 1, states(reg)


def test_crash_is_reported_and_replaced(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1)
    (old_pid,) = ready(client, w, 1)
    result = client.wait_result(client.submit("crash", {"exit_code": 7}))
    assert not result.success and result.error_type == "ProcessCrashed"
    assert "exit code 7" in (result.error or "")
    # The registration may still be the heartbeat from before the crash: wait for the replacement.
    client.wait_registration(
        w.worker_id,
        lambda r: states(r) == ["idle"] and r.info.processes[0].pid != old_pid,
        "the crashed process replaced by a new idle one",
        timeout=START,
    )


def test_recycle_idle_process_by_pid_and_any(client: Client, start_worker: StartWorker) -> None:
    w = start_worker()
    pids = ready(client, w, 2)
    wait_until(lambda: client.recycle(w.worker_id, pids[0]) == 1, timeout=START, what="a subscriber")
    reg = client.wait_registration(
        w.worker_id,
        lambda r: pids[0] not in [p.pid for p in r.info.processes] and states(r) == ["idle", "idle"],
        "pid replaced",
    )
    assert pids[1] in [p.pid for p in reg.info.processes]
    before = {p.pid for p in reg.info.processes}
    client.recycle(w.worker_id, None)
    client.wait_registration(
        w.worker_id,
        lambda r: len(before & {p.pid for p in r.info.processes}) == 1 and states(r) == ["idle", "idle"],
        "one idle process replaced",
    )


def commands_counted(port: int, outcome: str, count: int) -> dict[str, float]:
    return wait_until(
        lambda: (m := scrape(port))[f'workerpool_worker_commands_total{{outcome="{outcome}"}}'] >= count and m,
        timeout=CHANGE,
        what=f"{count} command(s) counted as {outcome}",
    )


def test_cannot_recycle_busy_process(client: Client, start_worker: StartWorker) -> None:
    port = free_port()
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1, WORKER_METRICS_PORT=port)
    tap = HeartbeatTap(client, w.worker_id)
    ready(client, w, 1)
    # Long enough that both commands below are handled while the only process is busy.
    eid = client.submit("sleep", {"seconds": 5})
    reg = client.wait_registration(w.worker_id, lambda r: states(r) == ["busy"], "busy")
    busy_pid = reg.info.processes[0].pid
    wait_until(lambda: client.recycle(w.worker_id, busy_pid) == 1, timeout=START, what="a subscriber")
    commands_counted(port, "busy", 1)
    client.recycle(w.worker_id, None)  # any idle process: there is none
    got = commands_counted(port, "no_idle_process", 1)
    assert got['workerpool_worker_commands_total{outcome="recycling"}'] == 0
    result = client.wait_result(eid)
    assert result.success
    # Every heartbeat until the result: the process ran on, busy, never stopping (neither command touched it).
    beats = tap.read()
    first_busy = next(i for i, h in enumerate(beats) if h["busy_count"] == 1)
    done = wait_until(
        lambda: next((i for i, h in enumerate(tap.read()) if i > first_busy and h["busy_count"] == 0), None),
        timeout=CHANGE,
        what="the heartbeat after the result",
    )
    beats = tap.read()
    during = beats[first_busy:done]
    assert len(during) >= 5 and all(pids(h) == [busy_pid] for h in during), [pids(h) for h in during]
    assert {h["processes"][0]["state"] for h in during} == {"busy"}
    assert pids(beats[done]) == [busy_pid] and pid_alive(busy_pid)
    assert scrape(port)["workerpool_worker_process_recycles_total"] == 0
    tap.close()


def test_malformed_commands_are_ignored(client: Client, start_worker: StartWorker) -> None:
    port = free_port()
    w = start_worker(WORKER_METRICS_PORT=port)
    started = ready(client, w, 2)
    channel = f"worker:{w.worker_id}:commands"
    wait_until(lambda: client.r.publish(channel, "{not json") == 1, timeout=START, what="a subscriber")
    for bad in (
        '{"type":"shutdown"}',
        '{"type":"recycle","pid":"12"}',
        "[]",
        '{"type":"recycle","pid":true}',
    ):
        client.r.publish(channel, bad)
    got = commands_counted(port, "malformed", 5)
    assert got['workerpool_worker_commands_total{outcome="malformed"}'] == 5
    assert client.wait_result(client.submit("pid")).result in started  # the worker works on
    reg = client.registration(w.worker_id)
    assert reg is not None and sorted(p.pid for p in reg.info.processes) == sorted(started)
    assert scrape(port)["workerpool_worker_process_recycles_total"] == 0  # none was taken for a recycle


def test_heartbeat_is_published_with_the_exact_schema(client: Client, start_worker: StartWorker) -> None:
    pubsub = client.r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(HEARTBEAT_CHANNEL)
    w = start_worker(POOL_NAME="default", POOL_NAMESPACE="bifrost")
    ready(client, w, 2)
    eid = client.submit("sleep", {"seconds": 1})

    def busy_heartbeat() -> dict[str, Any] | None:
        msg = pubsub.get_message(timeout=0.5)
        if msg is None:
            return None
        data: dict[str, Any] = json.loads(msg["data"])
        return data if data.get("busy_count") == 1 else None

    data = wait_until(busy_heartbeat, timeout=CHANGE, what="a heartbeat with a busy process")
    assert set(data) == HEARTBEAT_KEYS
    assert (data["type"], data["worker_id"], data["pool"], data["namespace"]) == (
        "worker_heartbeat",
        w.worker_id,
        "default",
        "bifrost",
    )
    busy = next(p for p in data["processes"] if p["state"] == "busy")
    assert set(busy) == PROCESS_KEYS
    assert busy["execution"]["execution_id"] == eid
    assert set(busy["execution"]) == EXECUTION_KEYS
    parse_heartbeat(json.dumps(data))  # and it satisfies the models
    ttl = client.r.ttl(worker_key(w.worker_id))
    assert 0 < ttl <= 3
    pubsub.close()


def test_missing_context_gets_a_failure_result(client: Client, start_worker: StartWorker) -> None:
    start_worker()
    result = client.wait_result(client.submit("noop", context=False))
    assert not result.success and result.error_type == "ContextMissing"


def test_invalid_context_gets_a_failure_result(client: Client, start_worker: StartWorker) -> None:
    start_worker()
    eid = "bad-ctx"
    client.r.set(f"bifrost:exec:{eid}:context", json.dumps({"function": "no colon here"}))
    client.r.zadd(client.queue, {eid: time.time()})
    result = client.wait_result(eid)
    assert not result.success and result.error_type == "InvalidContext"
    assert "function" in (result.error or "")


def test_only_the_pools_allowed_modules_run(client: Client, start_worker: StartWorker) -> None:
    """WORKER_ALLOWED_MODULES (spec.allowedModules): anyone who can write the queue names the
    function, so a module outside the list is failed unrun, and no process is used for it."""
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1, WORKER_ALLOWED_MODULES="workerpool.worker, examples")
    (pid,) = ready(client, w, 1)
    assert client.wait_result(client.submit("pid")).result == pid  # a submodule of an allowed module
    for function in ("subprocess:run", "workerpool.workerx:anything", "workerpool:__version__"):
        eid = f"refused-{function.partition(':')[0]}"
        context = {"function": function, "parameters": {"args": ["touch", "/tmp/owned"]}}
        client.r.set(f"bifrost:exec:{eid}:context", json.dumps(context))
        client.r.zadd(client.queue, {eid: time.time()})
        result = client.wait_result(eid)
        assert not result.success and result.error_type == "FunctionNotAllowed", function
        assert "allowedModules" in (result.error or "")
    assert client.wait_result(client.submit("pid")).result == pid  # the same process: none was used or lost
    reg = client.wait_registration(w.worker_id, lambda r: done(r) >= 2, "2 executions completed", timeout=START)
    assert done(reg) == 2  # the refused ones never reached a process


def done(reg: Any) -> int:
    return sum(p.executions_completed for p in reg.info.processes)


def test_execution_error_is_reported(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1)
    (pid,) = ready(client, w, 1)
    result = client.wait_result(client.submit("fail", {"message": "boom"}))
    assert (result.success, result.error, result.error_type) == (False, "boom", "ValueError")
    assert client.wait_result(client.submit("pid")).result == pid  # the process survived its error
    unknown = client.wait_result(client.submit("does_not_exist"))
    assert unknown.error_type == "AttributeError"


def test_result_is_published(client: Client, start_worker: StartWorker) -> None:
    pubsub = client.r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bifrost:executions:results")
    start_worker()
    eid = client.submit("echo", {"a": [1, 2]})

    def published() -> dict[str, Any] | None:
        msg = pubsub.get_message(timeout=0.5)
        return json.loads(msg["data"]) if msg else None

    data = wait_until(published, timeout=START, what="a published result")
    assert set(data) == RESULT_KEYS
    assert (data["execution_id"], data["result"]) == (eid, {"a": [1, 2]})
    pubsub.close()


def test_loops_for_multiple_executions(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1)
    (pid,) = ready(client, w, 1)
    ids = [client.submit("pid") for _ in range(25)]
    assert {client.wait_result(i).result for i in ids} == {pid}
    client.wait_registration(
        w.worker_id,
        lambda r: r.info.processes[0].executions_completed == 25,
        "25 executions completed by one process",
    )


def test_recycle_after_executions(client: Client, start_worker: StartWorker) -> None:
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1, RECYCLE_AFTER_EXECUTIONS=3)
    ready(client, w, 1)
    pids = [client.wait_result(client.submit("pid")).result for _ in range(7)]
    assert len(set(pids[0:3])) == 1 and len(set(pids[3:6])) == 1 and pids[0] != pids[3] != pids[6]


def test_sigterm_finishes_running_executions_then_unregisters(client: Client, start_worker: StartWorker) -> None:
    w = start_worker()
    ready(client, w, 2)
    eid = client.submit("sleep", {"seconds": 1.5})
    client.wait_registration(w.worker_id, lambda r: r.info.busy_count == 1, "busy")
    w.terminate()
    wait_until(lambda: "stopping: no new work" in w.logs(), timeout=CHANGE, what="the worker to start stopping")
    queued = client.submit("noop")  # submitted while it drains: a stopping worker claims nothing more
    assert w.proc is not None and w.proc.wait(timeout=START) == 0
    result = client.result(eid)
    assert result is not None and result.success
    assert not client.r.exists(worker_key(w.worker_id))
    assert client.r.zcard(f"{client.queue}:leases") == 0
    assert client.r.zscore(client.queue, queued) is not None


def test_kill_9_of_the_whole_worker_loses_nothing(client: Client, start_worker: StartWorker) -> None:
    a = start_worker(MIN_WORKERS=2, MAX_WORKERS=2, REGISTRATION_TTL_SECONDS=2)
    ready(client, a, 2)
    ids = [client.submit("sleep", {"seconds": 2}) for _ in range(5)]
    client.wait_registration(a.worker_id, lambda r: r.info.busy_count == 2, "two running")
    a.kill_group()  # the pod dies at once: no result, no unregister
    b = start_worker(MIN_WORKERS=3, MAX_WORKERS=3)
    results = {i: client.wait_result(i, timeout=30) for i in ids}
    assert all(r.success for r in results.values())
    assert {r.worker_id for r in results.values()} == {b.worker_id}
    assert client.r.zcard(client.queue) == 0
    assert client.r.zcard(f"{client.queue}:leases") == 0


def test_restarted_worker_requeues_what_it_held(
    client: Client, start_worker: StartWorker, redis_server: RedisServer, tmp_path: Path
) -> None:
    a = start_worker(MIN_WORKERS=1, MAX_WORKERS=1, REGISTRATION_TTL_SECONDS=60)
    ready(client, a, 1)
    eid = client.submit("sleep", {"seconds": 1})
    client.wait_registration(a.worker_id, lambda r: r.info.busy_count == 1, "busy")
    a.kill_group()
    # Same pod name restarting (container restart): its old lease is re-queued at once,
    # not after the 60 s lease.
    again = WorkerProcess(redis_server.url, tmp_path, worker_id=a.worker_id, MIN_WORKERS=1, MAX_WORKERS=1)
    again.start()
    try:
        assert client.wait_result(eid, timeout=15).success
    finally:
        again.stop()


def test_poison_execution_is_abandoned_after_max_attempts(client: Client, start_worker: StartWorker) -> None:
    eid = "poison"
    client.r.set(f"bifrost:exec:{eid}:context", json.dumps({"function": "x:y"}))
    # Three claims by workers that were lost before finishing.
    client.r.hset(f"{client.queue}:lease-info", eid, json.dumps({"worker_id": "gone", "score": "1", "attempts": 3}))
    client.r.zadd(client.queue, {eid: 1})
    start_worker(MAX_ATTEMPTS=3)
    result = client.wait_result(eid)
    assert result.error_type == "WorkerLost"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MIN_WORKERS": "two"}, "MIN_WORKERS='two': Input should be a valid integer"),
        ({"MIN_WORKERS": "5", "MAX_WORKERS": "2"}, "MAX_WORKERS=2 must be >= MIN_WORKERS=5"),
        ({"REDIS_URL": ""}, "REDIS_URL is required"),
        ({"REDIS_URL": "http://user:secret@host"}, "REDIS_URL: unknown scheme"),
        (
            {"WORKER_HEARTBEAT_INTERVAL_SECONDS": "-1"},
            "WORKER_HEARTBEAT_INTERVAL_SECONDS='-1': Input should be greater than or equal to 0.1",
        ),
    ],
)
def test_bad_configuration_is_a_clear_error(
    redis_server: RedisServer, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    w = WorkerProcess(redis_server.url, tmp_path, **env)
    out = subprocess.run(
        [sys.executable, "-m", "workerpool.cli", "worker"],
        env=w.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert "secret" not in out.stderr


def test_a_retiring_worker_claims_nothing_and_its_held_set_tracks_leases(
    client: Client, start_worker: StartWorker
) -> None:
    """The operator's retire step (DESIGN §5: never delete a busy worker) relies on these two keys."""
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1)
    ready(client, w, 1)
    held = f"{client.queue}:held:{w.worker_id}"
    eid = client.submit("sleep", {"seconds": 1})
    wait_until(lambda: client.r.smembers(held) == {eid.encode()}, timeout=CHANGE, what="the lease in the held set")
    assert client.wait_result(eid).success
    wait_until(lambda: client.r.scard(held) == 0, timeout=CHANGE, what="an empty held set after the result")
    client.r.set(f"worker:{w.worker_id}:retiring", "1", ex=60)
    queued = client.submit("noop")
    with pytest.raises(AssertionError, match="timed out"):
        wait_until(lambda: client.result(queued), timeout=2.5, what="a claim by a retiring worker")
    assert client.r.zscore(client.queue, queued) is not None  # still pending, untouched
    client.r.delete(f"worker:{w.worker_id}:retiring")
    assert client.wait_result(queued).success


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return parse_samples(resp.read().decode())


def test_metrics_count_each_outcome_its_duration_the_queue_wait_and_the_processes(
    client: Client, start_worker: StartWorker
) -> None:
    port = free_port()
    # A poison execution, abandoned before it runs: worker_lost.
    client.r.set("bifrost:exec:poison:context", json.dumps({"function": "x:y"}))
    client.r.hset(
        f"{client.queue}:lease-info", "poison", json.dumps({"worker_id": "gone", "score": "1", "attempts": 3})
    )
    client.r.zadd(client.queue, {"poison": time.time()})
    w = start_worker(MIN_WORKERS=1, MAX_WORKERS=1, MAX_ATTEMPTS=3, WORKER_METRICS_PORT=port)
    assert client.wait_result("poison").error_type == "WorkerLost"
    ready(client, w, 1)
    outcomes = {
        "success": client.submit("sleep", {"seconds": 0.3}),
        "failure": client.submit("fail"),
        "timeout": client.submit("hang", timeout=0.5),
        "crashed": client.submit("crash", {"exit_code": 7}),
    }
    for eid in outcomes.values():
        client.wait_result(eid)
    client.r.publish(f"worker:{w.worker_id}:commands", json.dumps({"type": "recycle", "pid": None}))
    ready(client, w, 1)  # the replacement of the recycled (or crashed) process
    got = wait_until(
        lambda: (m := scrape(port)).get("workerpool_worker_process_recycles_total", 0) >= 1 and m,
        timeout=CHANGE,
        what="the recycle counted",
    )
    for outcome in ("success", "failure", "timeout", "crashed", "worker_lost"):
        assert got[f'workerpool_worker_executions_total{{outcome="{outcome}"}}'] == 1, outcome
        assert got[f'workerpool_worker_execution_duration_seconds_count{{outcome="{outcome}"}}'] == 1
    assert got['workerpool_worker_execution_duration_seconds_bucket{le="0.25",outcome="success"}'] == 0
    assert got['workerpool_worker_execution_duration_seconds_bucket{le="0.5",outcome="success"}'] == 1
    assert got["workerpool_worker_queue_wait_seconds_count"] == 5  # the poison claim and four more
    assert got["workerpool_worker_queue_wait_seconds_sum"] < 30
    assert got["workerpool_worker_process_crashes_total"] == 1
    # The recycled process's replacement is started after the recycle is counted: wait for it.
    settled = wait_until(
        lambda: (m := scrape(port)).get('workerpool_worker_processes{state="idle"}') == 1 and m,
        timeout=10,
        what="one idle process again",
    )
    assert settled['workerpool_worker_processes{state="busy"}'] == 0


def test_no_metrics_port_means_no_endpoint(client: Client, start_worker: StartWorker) -> None:
    port = free_port()
    serving, silent = (
        start_worker(MIN_WORKERS=1, MAX_WORKERS=1, WORKER_METRICS_PORT=port),
        start_worker(MIN_WORKERS=1, MAX_WORKERS=1),
    )
    ready(client, serving, 1)
    ready(client, silent, 1)
    assert serving.proc is not None and silent.proc is not None
    assert listening_ports(serving.proc.pid) == {port}  # the check sees an endpoint where there is one
    assert listening_ports(silent.proc.pid) == set()
