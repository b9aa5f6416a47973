#!/usr/bin/env python3
"""`make demo`: the whole system, start to end, in the terminal, as a user runs it.

Without $KUBECONFIG: starts the local cluster (control plane and one real node:
containerd, kubelet, kube-proxy on a CNI bridge) and a redis-server on the
bridge; the image `make image` built is already in the node. Then, as on any
cluster: `helm install` of the chart with that image (the operator runs
in-cluster as its Deployment), examples/workerpool.yaml in a namespace that
enforces Pod Security "restricted", a burst that the worker pods serve, the
pool scaling up and back down, a recycle by annotation; then it cleans up.

With $KUBECONFIG: the same on that cluster. IMAGE names the image you built
and pushed (or loaded into your nodes), e.g. IMAGE=registry.example/wpo:0.1.0;
REDIS_URL a Redis that both this machine and the cluster's pods reach.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testbed"))

from devcluster import binaries  # noqa: E402

NS = "bifrost"
POOL = "default"
RELEASE = "workerpool-operator"
RELEASE_NS = "workerpool-system"
BURST = 24
EXAMPLE_IMAGE = "ghcr.io/bifrost-dev/workerpool-operator:0.1.0"


class Demo:
    def __init__(self, kubeconfig: Path, redis_url: str, env: dict[str, str], image: str) -> None:
        self.kubeconfig = kubeconfig
        self.redis_url = redis_url
        self.env = env
        self.image = image
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"\n\033[1m[{time.monotonic() - self.t0:6.1f}s] {text}\033[0m", flush=True)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        out = subprocess.run(
            [str(binaries.find("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
        )
        if check and out.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def helm(self, *args: str) -> str:
        out = subprocess.run(
            [str(binaries.find("helm")), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            env=self.env,
        )
        if out.returncode != 0:
            raise SystemExit(f"helm {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def pool(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "wp", POOL, "-n", NS, "-o", "json"))  # type: ignore[no-any-return]

    def row(self) -> str:
        s = self.pool().get("status") or {}
        ready = next((c["status"] for c in s.get("conditions", []) if c["type"] == "Ready"), "-")
        busy, idle = s.get("busyCount", 0), s.get("idleCount", 0)
        bar = "#" * busy + "." * idle
        return (
            f"  t+{time.monotonic() - self.t0:5.1f}s  desired {s.get('desiredWorkers', '-'):>2}  "
            f"workers {s.get('workers', '-'):>2}  busy {busy:>2}  idle {idle:>2}  "
            f"queue {s.get('queue', {}).get('depth', '-'):>3}  ready {ready:<5} {bar}"
        )

    def watch_until(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            line = self.row()
            if line.split("  ", 2)[2] != last.split("  ", 2)[2] if last else True:
                print(line, flush=True)
                last = line
            if done(self.pool().get("status") or {}):
                return
            time.sleep(1)
        raise SystemExit(f"demo: timed out waiting for {what}")

    def submit(self, count: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workerpool.cli",
                "submit",
                "workerpool.worker.functions:sleep",
                "--param",
                "seconds=4",
                "--count",
                str(count),
                "--wait",
                "--redis-url",
                self.redis_url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def install_chart(self) -> None:
        repository, _, tag = self.image.rpartition(":")
        self.say(f"helm install {RELEASE} charts/workerpool-operator --set image={self.image}")
        self.helm(
            "upgrade",
            "--install",
            RELEASE,
            str(ROOT / "charts" / "workerpool-operator"),
            "-n",
            RELEASE_NS,
            "--create-namespace",
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
            "--wait",
            "--timeout",
            "5m",
        )
        print(self.kubectl("get", "deployment,pods", "-n", RELEASE_NS, "-o", "wide"))

    def example(self) -> str:
        """examples/workerpool.yaml with the image named by $IMAGE, and shorter delays so the demo
        does not wait a minute for scale-down (set before applying: a later change of the
        heartbeat interval would change the pod template and replace the first worker)."""
        text = (ROOT / "examples" / "workerpool.yaml").read_text().replace(EXAMPLE_IMAGE, self.image)
        for field, example, demo in (("scaleDownDelaySeconds", 60, 10), ("heartbeatIntervalSeconds", 10, 2)):
            text, n = re.subn(rf"(?m)^(\s*{field}: ){example}\b", rf"\g<1>{demo}", text)
            assert n == 1, f"examples/workerpool.yaml no longer sets {field}: {example}"
        return text

    def scenario(self) -> None:
        self.say(f"applying examples/workerpool.yaml to namespace {NS} (Redis URL in Secret 'redis')")
        self.kubectl("create", "namespace", NS, check=False)
        self.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
        secret = self.kubectl(
            "create",
            "secret",
            "generic",
            "redis",
            "-n",
            NS,
            f"--from-literal=url={self.redis_url}",
            "--dry-run=client",
            "-o",
            "yaml",
        )
        self.kubectl("apply", "-f", "-", input=secret)
        self.kubectl("apply", "--server-side", "-f", "-", input=self.example())
        self.kubectl("wait", "--for=condition=Ready", f"wp/{POOL}", "-n", NS, "--timeout=120s")
        print(self.kubectl("get", "workerpools", "-n", NS))
        print(self.kubectl("get", "pods", "-n", NS, "-o", "wide"))

        self.say(f"submitting a burst of {BURST} executions (4 s each); 4 processes per worker, max 5 workers")
        burst = self.submit(BURST)
        self.watch_until(lambda s: s.get("desiredWorkers") == 5 and s.get("workers") == 5, 90, "scale-up")
        self.watch_until(lambda s: s.get("readyWorkers", 0) >= 4, 60, "the new workers to report")
        self.say(f"kubectl workerpool top {POOL} -n {NS}: every process, from the workers' heartbeats")
        print(self.plugin("top", POOL, "-n", NS))
        held = self.evict(self.busy_worker(), "a busy worker (as kubectl drain would): the operator's webhook holds it")
        self.watch_until(
            lambda s: s.get("busyCount") == 0 and s.get("queue", {}).get("depth") == 0, 120, "the burst to finish"
        )
        _, err = burst.communicate(timeout=120)
        print("  " + err.strip().splitlines()[-1])
        self.evict(held, "it again, now that its executions are done (drain retries every 5 s)")
        # A worker that stays (the evicted one is on its way out).
        self.scrape_worker(next(w["workerId"] for w in self.pool()["status"]["workerDetails"] if w["workerId"] != held))
        self.say("demand is gone: after scaleDownDelaySeconds the operator removes idle workers")
        # Settled: one pod, and the removed workers have deregistered (they drain and exit on SIGTERM).
        self.watch_until(
            lambda s: s.get("workers") == 1 and s.get("desiredWorkers") == 1 and len(s.get("workerDetails", [])) == 1,
            120,
            "scale-down",
        )
        print(self.kubectl("get", "workerpools", "-n", NS))

        status = self.pool()["status"]
        worker = status["workerDetails"][0]
        pid = worker["processes"][0]["pid"]
        self.say(f"recycling process {pid} of worker {worker['workerId']} by annotation")
        self.kubectl("annotate", "wp", POOL, "-n", NS, f"bifrost.dev/recycle={worker['workerId']}:{pid}", "--overwrite")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = self.pool()["status"]
            pids = [p["pid"] for w in s["workerDetails"] for p in w["processes"]]
            if s.get("lastRecycle") and pid not in pids and len(pids) == len(worker["processes"]):
                print(f"  lastRecycle: {json.dumps(s['lastRecycle'])}")
                print(f"  processes before: {[p['pid'] for p in worker['processes']]}  after: {pids}")
                break
            time.sleep(0.5)
        else:
            raise SystemExit("demo: the recycled process was not replaced")
        print(self.kubectl("describe", "wp", POOL, "-n", NS).split("Events:")[-1])

    def plugin(self, *args: str) -> str:
        """`kubectl workerpool ...`: kubectl finds the plugin (installed with the package) on PATH."""
        env = {**self.env, "PATH": f"{Path(sys.executable).parent}:{self.env.get('PATH', os.environ['PATH'])}"}
        out = subprocess.run(
            [str(binaries.find("kubectl")), "workerpool", args[0], "--kubeconfig", str(self.kubeconfig), *args[1:]],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"kubectl workerpool {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def scrape_worker(self, pod: str) -> None:
        """A worker's own metrics (spec.metricsPort), through the API server's pod proxy."""
        self.say(f"worker {pod}'s metrics (spec.metricsPort 9400), as Prometheus scrapes them")
        text = self.kubectl("get", "--raw", f"/api/v1/namespaces/{NS}/pods/{pod}:9400/proxy/metrics")
        wanted = ("workerpool_worker_executions_total", "workerpool_worker_queue_wait_seconds_count",
                  "workerpool_worker_processes", "workerpool_worker_process_")  # fmt: skip
        for line in text.splitlines():
            if line.startswith(wanted) and "_created" not in line:
                print(f"  {line}")

    def busy_worker(self) -> str:
        return str(next(w["workerId"] for w in self.pool()["status"]["workerDetails"] if w["busyCount"] > 0))

    def evict(self, pod: str, why: str) -> str:
        """What `kubectl drain` and the autoscalers do: the Eviction API (a held one answers 429)."""
        self.say(f"evicting {pod}: {why}")
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": NS}}
        out = subprocess.run(
            [str(binaries.find("kubectl")), "--kubeconfig", str(self.kubeconfig), "create", "--raw",
             f"/api/v1/namespaces/{NS}/pods/{pod}/eviction", "-f", "-"],
            input=json.dumps(eviction), capture_output=True, text=True, env=self.env,
        )  # fmt: skip
        print(f"  {out.stderr.strip() if out.returncode else 'allowed: evicted'}")
        return pod

    def operator_log(self, path: Path) -> None:
        """Both replicas' logs, each line prefixed with its pod."""
        selector = f"app.kubernetes.io/instance={RELEASE}"
        path.write_text(self.kubectl("logs", "-l", selector, "-n", RELEASE_NS, "--prefix", "--tail=-1", check=False))


def local() -> int:
    from devcluster.stack import DevStack

    work = Path(tempfile.mkdtemp(prefix="wpo-demo-"))
    t0 = time.monotonic()
    print("starting the local cluster (control plane, one node on containerd) and redis-server ...", flush=True)
    with DevStack(work / "stack") as stack:
        assert stack.redis is not None
        demo = Demo(stack.cluster.kubeconfig, stack.redis.url, stack.cluster.env(), stack.image)
        demo.t0 = t0
        try:
            demo.install_chart()
            demo.scenario()
        finally:
            demo.operator_log(work / "operator.log")
            demo.say(f"cleaning up (operator log: {work / 'operator.log'})")
    print(f"demo finished in {time.monotonic() - t0:.0f} s")
    return 0


def remote(kubeconfig: str) -> int:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise SystemExit("with $KUBECONFIG set, REDIS_URL must name a Redis reachable from here and from the pods")
    image = os.environ.get("IMAGE", EXAMPLE_IMAGE)
    demo = Demo(Path(kubeconfig), redis_url, {**os.environ}, image)
    demo.say(f"using the cluster of {kubeconfig}")
    demo.install_chart()
    demo.scenario()
    demo.say("done; remove with: kubectl delete ns bifrost && helm uninstall -n workerpool-system workerpool-operator")
    return 0


if __name__ == "__main__":
    kubeconfig = os.environ.get("KUBECONFIG")
    sys.exit(remote(kubeconfig) if kubeconfig else local())
