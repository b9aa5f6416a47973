"""Arbitrary command payloads against a live worker: logged and ignored, never a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devcluster.redis_server import RedisServer

from ..integration.workers import START, Client, WorkerProcess, wait_until
from .volume import fuzz_examples

pytestmark = [pytest.mark.faults, pytest.mark.redis]


@pytest.fixture(scope="module")
def live_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, Client]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = RedisServer(Path(tmp) / "redis").start()
    w = WorkerProcess(server.url, Path(tmp), MIN_WORKERS=2, MAX_WORKERS=2).start()
    client = Client(server.url)
    wait_until(
        lambda: client.r.publish(f"worker:{w.worker_id}:commands", "{}") == 1,
        timeout=START,
        what="the worker to subscribe",
    )
    yield w, client
    w.stop()
    server.stop()


payloads = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["recycle", "RECYCLE", "shutdown", ""])},
        optional={
            "pid": st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans(), st.floats(allow_nan=True))
        },
    ).map(json.dumps),
)


@settings(max_examples=fuzz_examples(1500), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=payloads)
def test_arbitrary_commands(live_worker: tuple[WorkerProcess, Client], raw: str | bytes) -> None:
    w, client = live_worker
    assert client.r.publish(f"worker:{w.worker_id}:commands", raw) == 1  # delivered to the live worker


def test_worker_still_serves_after_the_fuzzing(live_worker: tuple[WorkerProcess, Client]) -> None:
    """Pub/sub keeps order: once a recycle sent after the fuzz is carried out, every fuzz
    payload before it has been read and handled, and the worker is still up."""
    w, client = live_worker
    before = client.wait_registration(w.worker_id, lambda r: r.info.pool_size == 2, "a pool of 2")
    pids = {p.pid for p in before.info.processes}
    client.recycle(w.worker_id, None)
    client.wait_registration(
        w.worker_id, lambda r: not pids <= {p.pid for p in r.info.processes}, "the sentinel recycle carried out"
    )
    assert w.proc is not None and w.proc.poll() is None
    result = client.wait_result(client.submit("echo", {"ok": True}))
    assert result.result == {"ok": True}
    # Waited for, not sampled: the heartbeat right after a result may still show the process
    # that ran it finishing, or the recycled one starting (a clean-clone run saw idle 1 of 2).
    client.wait_registration(
        w.worker_id, lambda r: r.info.pool_size == 2 and r.info.idle_count == 2, "a pool of 2, both idle again"
    )
