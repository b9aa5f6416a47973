"""`kubectl workerpool` against the real API server, a real operator and real workers:
found by kubectl as a plugin, its columns, `-o json` equal to the seed's schema, a recycle
end to end with its exit codes, and its errors (unknown pool, missing CRD, RBAC)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from devcluster import binaries
from devcluster.harness import RECYCLE, OperatorProcess, Pools, pool_manifest, wait_until
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack
from workerpool.contracts.wire import WorkerInfo
from workerpool.plugin import cli
from workerpool.plugin import client as plugin_client

from ..shapes import EXECUTION_KEYS, PROCESS_KEYS, WORKER_INFO_KEYS
from .test_operator import ready_pool

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent  # where `pip install` put kubectl-workerpool


def plugin_env(stack: DevStack, kubeconfig: Path | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(kubeconfig or stack.cluster.kubeconfig),
    }


def plugin(stack: DevStack, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`kubectl workerpool ARGS`, as a user runs it: kubectl finds the plugin on PATH."""
    kubectl = str(binaries.find("kubectl"))
    env = plugin_env(stack, kubeconfig)
    return subprocess.run([kubectl, "workerpool", *args], env=env, capture_output=True, text=True, timeout=120)


class HeaderCounter:
    """Counts the tables `top --watch` draws (one pool header line each), read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.count = 0
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if ": min " in line:
                self.count += 1


def test_top_shows_a_row_per_process_and_json_is_the_seeds_worker_list(
    stack: DevStack, pools: Pools, operator: OperatorProcess, redis_server: RedisServer, namespace: str
) -> None:
    pools.apply(pool_manifest("p", redis_server.url, minWorkers=2, processes={"min": 2, "max": 2}))
    status = ready_pool(pools, "p", workers=2)
    out = plugin(stack, "top", "p", "-n", namespace)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert (
        lines[0].startswith(f"{namespace}/p: min 2 max ") and " workers 2 " in lines[0] and lines[0].endswith("ready 2")
    )
    assert lines[1].split() == ["WORKER", "PID", "STATE", "MEMORY(MB)", "UPTIME", "COMPLETED", "EXECUTION", "ELAPSED"]
    rows = [line.split() for line in lines[2:]]
    expected = sorted((w["workerId"], str(p["pid"])) for w in status["workerDetails"] for p in w["processes"])
    assert sorted((r[0], r[1]) for r in rows) == expected and len(rows) == 4
    assert {r[2] for r in rows} == {"idle"}

    as_json = plugin(stack, "top", "p", "-n", namespace, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    workers = json.loads(as_json.stdout)
    assert len(workers) == 2
    for w in workers:
        assert set(w) == WORKER_INFO_KEYS
        for proc in w["processes"]:
            assert set(proc) == PROCESS_KEYS
            assert proc["execution"] is None or set(proc["execution"]) == EXECUTION_KEYS
        WorkerInfo.model_validate(w)

    everywhere = plugin(stack, "top", "-A")
    assert everywhere.returncode == 0 and f"{namespace}/p:" in everywhere.stdout

    # --watch redraws when the status changes (a watch: the recycle's record is a change).
    watcher = subprocess.Popen(
        [str(binaries.find("kubectl")), "workerpool", "top", "p", "-n", namespace, "--watch"],
        env=plugin_env(stack),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        headers = HeaderCounter(watcher)
        wait_until(lambda: headers.count >= 1, timeout=30, what="the first table")
        pools.annotate("p", f"{status['workerDetails'][0]['workerId']}")
        wait_until(lambda: headers.count >= 2, timeout=RECYCLE, what="a redraw after the status changed")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)

    queue = plugin(stack, "queue", "p", "-n", namespace)
    assert queue.returncode == 0, queue.stderr
    assert json.loads(queue.stdout) == {"depth": 0, "oldest_age_seconds": 0.0}


def test_recycle_waits_for_the_operators_record_and_exits_1_on_a_rejected_target(
    stack: DevStack, pools: Pools, operator: OperatorProcess, redis_server: RedisServer, namespace: str
) -> None:
    pools.apply(pool_manifest("p", redis_server.url))
    status = ready_pool(pools, "p")
    worker = status["workerDetails"][0]
    wid, pid = worker["workerId"], worker["processes"][0]["pid"]

    ok = plugin(stack, "recycle", "p", f"{wid}:{pid}", "-n", namespace, "--timeout", str(RECYCLE))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{wid}:{pid}\trecycle_requested" in ok.stdout
    request = pools.get("p")["metadata"]["annotations"]["bifrost.dev/recycle"]
    assert request.startswith(f"{wid}:{pid}@")  # a fresh token: the same target can be asked again

    again = plugin(stack, "recycle", "p", "--all", "-n", namespace, "--timeout", str(RECYCLE))
    assert again.returncode == 0 and f"{wid}\trecycle_requested" in again.stdout

    bad = plugin(stack, "recycle", "p", "p-nosuchpod", "-n", namespace, "--timeout", str(RECYCLE))
    assert bad.returncode == 1
    assert "p-nosuchpod\trejected: " in bad.stdout


def test_errors_are_one_clear_sentence_with_exit_code_2(
    stack: DevStack, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = plugin(stack, "top", "nosuchpool", "-n", namespace)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == f'error: WorkerPool "nosuchpool" in namespace "{namespace}" not found'
    assert plugin(stack, "recycle", "nosuchpool", "x", "-n", namespace).returncode == 2

    # RBAC: a ServiceAccount that may do nothing.
    stack.cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = stack.cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    nobody = stack.cluster.write_kubeconfig(tmp_path / "nobody.kubeconfig", user={"token": token}, name="nobody")
    denied = plugin(stack, "top", "-n", namespace, kubeconfig=nobody)
    assert denied.returncode == 2
    assert denied.stderr.startswith(f'error: forbidden: you may not get WorkerPools in namespace "{namespace}"')
    assert "Traceback" not in denied.stderr

    # A cluster without the CRD: the same API server, asked for a group it does not serve.
    absent = SimpleNamespace(GROUP="absent.bifrost.dev", VERSION="v1alpha1", PLURAL="workerpools")
    monkeypatch.setattr(plugin_client, "names", absent)
    code = cli.main(["top", "-n", namespace, "--kubeconfig", str(stack.cluster.kubeconfig)])
    assert code == 2
    assert "the WorkerPool CRD (workerpools.absent.bifrost.dev/v1alpha1) is not installed" in capsys.readouterr().err

    missing_context = plugin(stack, "top", "--context", "nosuchcontext")
    assert missing_context.returncode == 2 and 'context "nosuchcontext" not found' in missing_context.stderr
