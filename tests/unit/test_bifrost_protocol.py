"""`protocol: bifrost` as pure logic: Bifrost's recorded wire parsed into reports, the
env its worker reads, its commands, and the checks that stand in for a retire
handshake it does not have (a recycle or a delete only of a worker that runs nothing)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.contracts.report import ExecutionReport, ProcessReport, WorkerReport
from workerpool.contracts.resource import WorkerPoolSpec
from workerpool.contracts.wire import WireFormatError
from workerpool.decide.observation import WorkerView
from workerpool.decide.pods import PoolRef, render_pod
from workerpool.decide.recycle import KILLS_RUNNING, decide_recycle
from workerpool.decide.snapshot import snapshot_holds
from workerpool.decide.status import idle_capacity, worker_detail
from workerpool.plugin.view import Pool, process_rows
from workerpool.protocols import BIFROST, SEED, Heartbeat, Ignored, Offline

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "bifrost"
ID = "wp-bifrost-abcde"
REF = PoolRef("wp", "bifrost", "uid-1")


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def bifrost_spec(**overrides: Any) -> WorkerPoolSpec:
    spec: dict[str, Any] = {
        "protocol": "bifrost",
        "processes": {"max": 4},
        "redis": {"urlSecretRef": {"name": "bifrost", "key": "redis-url"}},
        "rabbitmq": {"urlSecretRef": {"name": "bifrost", "key": "rabbitmq-url"}, "queues": ["workflow-executions"]},
        "template": {"spec": {"containers": [{"name": "worker", "image": "ghcr.io/gobifrost/bifrost-api"}]}},
    }
    spec.update(overrides)
    return WorkerPoolSpec.model_validate(spec)


def test_the_recorded_busy_heartbeat_is_a_report_of_two_running_executions() -> None:
    heard = BIFROST.parse_message(sample("heartbeat-busy.json"))
    assert isinstance(heard, Heartbeat)
    report = heard.report
    assert (report.worker_id, report.pool_size, report.busy_count, report.idle_count) == (ID, 2, 2, 0)
    assert [p.state for p in report.processes] == ["busy", "busy"]
    assert report.running == ("bb2d3ca1-10c6-46ba-9ddb-33dcbf1733cd", "3c61ca51-4e0c-49b7-b947-26af935e575f")
    assert not report.runs_nothing
    assert report.reported_at == dt.datetime(2026, 12, 1, 21, 41, 59, 115568, tzinfo=dt.UTC)
    # Bifrost sends no process bounds and no pool: the spec fills the bounds, pods are matched by name.
    assert (report.min_processes, report.max_processes, report.pool, report.namespace) == (None, None, None, None)


def test_the_recorded_idle_heartbeat_runs_nothing() -> None:
    heard = BIFROST.parse_message(sample("heartbeat-idle.json"))
    assert isinstance(heard, Heartbeat)
    assert heard.report.runs_nothing and heard.report.processes == ()


def test_worker_offline_and_other_events() -> None:
    assert BIFROST.parse_message(sample("worker-offline.json")) == Offline(ID)
    for kind in ("pool_scaling", "pool_progress", "pool_config_changed"):
        assert BIFROST.parse_message(json.dumps({"type": kind, "worker_id": ID})) == Ignored(kind)


def test_a_killed_process_may_carry_its_execution_and_still_counts_as_running() -> None:
    data = json.loads(sample("heartbeat-busy.json"))
    data["processes"][0]["state"] = "killed"
    data["busy_count"] = 1
    heard = BIFROST.parse_message(json.dumps(data))
    assert isinstance(heard, Heartbeat)
    assert heard.report.processes[0].state == "killed"
    assert heard.report.processes[0].execution is not None
    assert len(heard.report.running) == 2 and not heard.report.runs_nothing
    # The seed's wire rejects exactly this (its killed process runs nothing): the reason for the seam.
    with pytest.raises(WireFormatError):
        SEED.parse_message(json.dumps({**data, "min_workers": 1, "max_workers": 1}))


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (lambda d: d.pop("timestamp"), "timestamp"),
        (lambda d: d.update(busy_count=-1), "busy_count"),
        (lambda d: d["processes"][0].update(state="draining"), "processes.0.state"),
        (lambda d: d["processes"][0].update(pid="x"), "processes.0.pid"),
    ],
)
def test_a_malformed_heartbeat_names_the_field(change: Any, names: str) -> None:
    data = json.loads(sample("heartbeat-busy.json"))
    change(data)
    with pytest.raises(WireFormatError, match=names):
        BIFROST.parse_message(json.dumps(data))


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_junk_is_a_wire_format_error_or_an_ignored_event(raw: bytes | str) -> None:
    try:
        heard = BIFROST.parse_message(raw)
    except WireFormatError:
        return
    assert isinstance(heard, Heartbeat | Offline | Ignored)


def test_reads_the_snapshot_as_the_report_and_a_bare_registration_as_incomplete() -> None:
    registration = {k.encode(): v.encode() for k, v in json.loads(sample("registration.json")).items()}
    assert BIFROST.worker_reads(ID) == (("hgetall", f"bifrost:pool:{ID}"), ("get", f"bifrost:pool:{ID}:heartbeat"))
    report = BIFROST.parse_reads(ID, [registration, sample("heartbeat-busy.json").encode()])
    assert report is not None and report.complete and report.busy_count == 2
    bare = BIFROST.parse_reads(ID, [registration, None])
    assert bare is not None and not bare.complete and not bare.runs_nothing  # unknown, never idle
    # A worker whose registration lapsed still heartbeats: its snapshot alone makes it a worker.
    assert BIFROST.parse_reads(ID, [{}, sample("heartbeat-idle.json")]) is not None
    assert BIFROST.parse_reads(ID, [{}, None]) is None
    with pytest.raises(WireFormatError, match="does not match"):
        BIFROST.parse_reads("other", [{}, sample("heartbeat-idle.json")])


def test_worker_ids_from_keys() -> None:
    assert BIFROST.worker_id_from_key(f"bifrost:pool:{ID}") == ID
    assert BIFROST.worker_id_from_key(f"bifrost:pool:{ID}:heartbeat") == ID
    assert BIFROST.worker_id_from_key(f"bifrost:pool:{ID}:commands") is None
    assert BIFROST.worker_id_from_key(f"worker:{ID}") is None
    assert BIFROST.registration_match == "bifrost:pool:*"


def test_recycle_messages_are_bifrosts_actions() -> None:
    channel, message = BIFROST.recycle_message(ID, 4711, "wp-x:4711")
    assert channel == f"bifrost:pool:{ID}:commands"
    assert json.loads(message) == {"action": "recycle_process", "pid": 4711, "reason": "wp-x:4711"}
    assert json.loads(BIFROST.recycle_message(ID, None, "*")[1]) == {"action": "recycle_all", "reason": "*"}
    assert not BIFROST.has_retire_handshake and BIFROST.handshake(ID, "q") is None


def test_the_pod_gets_the_env_bifrost_reads_and_none_of_the_seeds() -> None:
    pod = render_pod(REF, bifrost_spec(executionTimeoutSeconds=120, gracefulShutdownSeconds=7), "ours:1")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/gobifrost/bifrost-api"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["BIFROST_REDIS_URL"] == {"secretKeyRef": {"name": "bifrost", "key": "redis-url"}}
    assert env["BIFROST_RABBITMQ_URL"] == {"secretKeyRef": {"name": "bifrost", "key": "rabbitmq-url"}}
    assert env["BIFROST_MAX_WORKERS"] == env["BIFROST_MAX_CONCURRENCY"] == "4"
    assert env["BIFROST_EXECUTION_TIMEOUT_SECONDS"] == "120"
    assert env["BIFROST_GRACEFUL_SHUTDOWN_SECONDS"] == "7"
    assert env["BIFROST_WORKER_HEARTBEAT_INTERVAL_SECONDS"] == "10"
    assert env["BIFROST_DRAIN_DEADLINE_SECONDS"] == "127"
    assert not {"REDIS_URL", "MIN_WORKERS", "MAX_WORKERS", "WORKER_ID", "QUEUE_KEY"} & env.keys()
    assert pod["spec"]["terminationGracePeriodSeconds"] > 127  # above the drain deadline
    assert "hostname" not in pod["spec"]  # Bifrost's worker_id is HOSTNAME: the pod name


def test_admission_rules_for_the_protocol() -> None:
    with pytest.raises(ValueError, match="rabbitmq is required"):
        bifrost_spec(rabbitmq=None)
    with pytest.raises(ValueError, match=r"needs template\.spec\.containers"):
        bifrost_spec(template={})
    with pytest.raises(ValueError, match=r"exactly one of rabbitmq\.url"):
        bifrost_spec(rabbitmq={"url": "amqp://h/", "urlSecretRef": {"name": "s"}, "queues": ["q"]})
    with pytest.raises(ValueError, match="queues"):
        bifrost_spec(rabbitmq={"url": "amqp://h/", "queues": []})
    with pytest.raises(ValueError, match="not allowed otherwise"):
        WorkerPoolSpec.model_validate(
            {"redis": {"url": "redis://r/0"}, "rabbitmq": {"url": "amqp://h/", "queues": ["q"]}}
        )
    assert WorkerPoolSpec.model_validate({"redis": {"url": "redis://r/0"}}).protocol == "seed"
    assert bifrost_spec(processes={"max": 1}).processes.max == 1  # no minimum of processes in Bifrost's worker
    with pytest.raises(ValueError, match=r"processes\.max must be >= processes\.min"):
        WorkerPoolSpec.model_validate({"redis": {"url": "redis://r/0"}, "processes": {"max": 1}})


def test_the_status_detail_takes_the_bounds_bifrost_does_not_send_from_the_spec() -> None:
    heard = BIFROST.parse_message(sample("heartbeat-busy.json"))
    assert isinstance(heard, Heartbeat)
    detail = worker_detail(heard.report, (0, 4)).model_dump(mode="json", by_alias=True)
    assert (detail["minWorkers"], detail["maxWorkers"], detail["busyCount"]) == (0, 4, 2)
    assert detail["processes"][0]["execution"]["executionId"] == "bb2d3ca1-10c6-46ba-9ddb-33dcbf1733cd"
    assert detail["idleCount"] == 2  # two of its four slots are free


def test_an_idle_bifrost_worker_reads_as_idle_with_its_capacity_not_as_starting() -> None:
    """Bifrost keeps no idle processes: its idle heartbeat has none, and `kubectl workerpool top`
    showed such a worker as `starting` with idleCount 0 for as long as it was idle."""
    heard = BIFROST.parse_message(sample("heartbeat-idle.json"))
    assert isinstance(heard, Heartbeat)
    detail = worker_detail(heard.report, (0, 10))
    assert (detail.idle_count, detail.busy_count, detail.processes) == (10, 0, [])
    assert idle_capacity(heard.report, (0, 10)) == 10
    bare = BIFROST.parse_reads("w", [{b"started_at": b"2026-12-01T21:41:44+00:00"}, None])
    assert bare is not None and idle_capacity(bare, (0, 10)) == 0  # registered, not heard yet: unknown
    pool = Pool.from_object({"metadata": {"name": "b", "namespace": "ns"}, "spec": {},
                             "status": {"workerDetails": [detail.model_dump(mode="json", by_alias=True)]}})  # fmt: skip
    assert process_rows(pool)[0][2] == "idle (10 free)"


T = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def report(running: int = 0, at: dt.datetime = T, complete: bool = True, busy: int | None = None) -> WorkerReport:
    procs = tuple(
        ProcessReport(100 + i, f"process-{i}", "busy", 1.0, 1.0, 0, ExecutionReport(f"e{i}", T, 1.0))
        for i in range(running)
    )
    return WorkerReport(
        worker_id="w",
        started_at=T,
        hostname="w",
        pool_size=running,
        idle_count=0,
        busy_count=running if busy is None else busy,
        processes=procs,
        reported_at=at,
        complete=complete,
    )


def test_the_snapshot_check_before_a_delete() -> None:
    now, window = T.timestamp() + 5, 22.0
    assert snapshot_holds(report(), now, window) == ([], "")
    assert snapshot_holds(None, now, window) == ([], "")  # never registered, or gone
    assert snapshot_holds(report(2), now, window) == (["e0", "e1"], "")
    assert snapshot_holds(report(0, busy=1), now, window)[0] == ["1 busy process(es)"]
    held, why = snapshot_holds(report(), T.timestamp() + 60, window)
    assert held is None and "60 s old" in why
    assert snapshot_holds(report(complete=False, at=T), now, window)[0] is None


def test_a_bifrost_recycle_goes_only_to_a_worker_that_runs_nothing() -> None:
    live = {
        "idle": WorkerView(report(), fresh=True),
        "busy": WorkerView(report(1), fresh=True),
        "silent": WorkerView(report(), fresh=False),
    }
    decision = decide_recycle("idle:77,busy,silent", "uid", live, T, kills_running=True)
    assert decision.publish == (decide_recycle("idle:77", "uid", live, T, True).publish or ())
    assert [(c.worker_id, c.pid) for c in decision.publish or ()] == [("idle", 77)]
    results = {r.worker_id: r for r in decision.record.results}
    assert results["idle"].status == "recycle_requested"
    assert results["busy"].status == "rejected" and KILLS_RUNNING in results["busy"].reason
    assert "e0" in results["busy"].reason
    assert results["silent"].status == "rejected" and "no fresh heartbeat" in results["silent"].reason
    everyone = decide_recycle("*", "uid", live, T, kills_running=True)
    assert [(c.worker_id, c.pid) for c in everyone.publish or ()] == [("idle", None)]
