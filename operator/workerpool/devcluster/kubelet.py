"""TEST INFRASTRUCTURE — a harness kubelet: runs pods as local processes.

This is not a kubelet. It exists so that tests and the demo exercise the
operator against a real API server with real worker processes, on a machine
without a container runtime. It:

- registers a Node and keeps it Ready;
- binds pending pods (no nodeName) of the watched namespaces to that node
  (there is no scheduler);
- runs each pod's first container's command + args as a local process, with
  the image ignored, `python`/`python3`/`workerpool` mapped to the project's
  interpreter, and the env resolved (plain values, downward API fieldRef
  metadata.name/namespace/uid, status.podIP, spec.nodeName, secretKeyRef,
  configMapKeyRef, envFrom);
- reports phase, Ready/ContainersReady conditions and containerStatuses via
  the status subresource, and applies restartPolicy;
- on deletion sends SIGTERM, waits terminationGracePeriodSeconds, sends
  SIGKILL, then completes the deletion (grace period 0).

Everything runs on one asyncio loop in one thread, so every child gets
PR_SET_PDEATHSIG from a thread that lives as long as the kubelet: killing the
kubelet kills its pods' processes.

Run: python -m workerpool.devcluster.kubelet --kubeconfig PATH [--namespace NS ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from .procs import _die_with_parent

log = logging.getLogger("harness-kubelet")

NODE_NAME = "harness-kubelet"
POD_IP = "127.0.0.1"
RESTART_BACKOFF_MAX = 10.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def translate_command(argv: list[str]) -> list[str]:
    """Run Python entry points with the project's interpreter (the image is ignored)."""
    if not argv:
        return argv
    head = os.path.basename(argv[0])
    if head in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    if head == "workerpool":
        return [sys.executable, "-m", "workerpool.cli", *argv[1:]]
    return argv


@dataclass
class PodRun:
    """One pod's process and what has been reported about it."""

    namespace: str
    name: str
    uid: str
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: str | None = None
    supervisor: asyncio.Task[None] | None = None
    terminating: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class HarnessKubelet:
    def __init__(self, api: client.ApiClient, namespaces: list[str], log_dir: Path) -> None:
        self.v1 = client.CoreV1Api(api)
        self.namespaces = namespaces
        self.log_dir = log_dir
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.tasks: set[asyncio.Task[Any]] = set()

    # --- node -----------------------------------------------------------------------

    async def register_node(self) -> None:
        body: Any = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {"kubernetes.io/hostname": NODE_NAME, "workerpool.dev/harness": "true"},
            },
        }
        with contextlib.suppress(ApiException):
            await self.v1.create_node(body)
        await self.v1.patch_node_status(
            NODE_NAME,
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "HarnessKubeletReady",
                            "message": "harness kubelet (test infrastructure)",
                            "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ],
                    "addresses": [{"type": "InternalIP", "address": POD_IP}],
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                }
            },
        )

    # --- watch loop -------------------------------------------------------------------

    def _watched(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    async def run(self) -> None:
        await self.register_node()
        log.info(
            "node %s registered; watching pods in %s",
            NODE_NAME,
            ", ".join(self.namespaces) or "all namespaces",
        )
        while True:
            try:
                pods = await self.v1.list_pod_for_all_namespaces()
                for pod in pods.items:
                    await self.on_pod(pod)
                rv = pods.metadata.resource_version
                w = watch.Watch()
                async for event in w.stream(
                    self.v1.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=120
                ):
                    if event["type"] == "DELETED":
                        await self.on_gone(event["object"])
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        await self.on_pod(event["object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # re-list and carry on: a watch may expire (410)
                log.warning("pod watch interrupted (%s); re-listing", exc)
                await asyncio.sleep(0.5)

    async def on_pod(self, pod: Any) -> None:
        meta, spec = pod.metadata, pod.spec
        if not self._watched(meta.namespace):
            return
        if not spec.node_name:
            if meta.deletion_timestamp is None:
                await self.bind(pod)
            return
        if spec.node_name != NODE_NAME:
            return
        run = self.runs.get(meta.uid)
        if meta.deletion_timestamp is not None:
            if run is None:
                await self.finish_deletion(meta.namespace, meta.name, meta.uid)
            elif not run.terminating:
                run.terminating = True
                grace = meta.deletion_grace_period_seconds
                if grace is None:
                    grace = spec.termination_grace_period_seconds or 30
                self._spawn_task(self.terminate(run, float(grace)))
            return
        if run is None and pod.status.phase in (None, "Pending"):
            run = PodRun(meta.namespace, meta.name, meta.uid)
            self.runs[meta.uid] = run
            run.supervisor = self._spawn_task(self.supervise(run, pod))

    async def on_gone(self, pod: Any) -> None:
        run = self.runs.pop(pod.metadata.uid, None)
        if run is not None and run.proc is not None and run.proc.returncode is None:
            self._kill_group(run, signal.SIGKILL)

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def bind(self, pod: Any) -> None:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(kind="Node", name=NODE_NAME),
        )
        try:
            await self.v1.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("binding %s/%s failed: %s", pod.metadata.namespace, pod.metadata.name, exc.reason)

    # --- running a pod ---------------------------------------------------------------------

    async def resolve_env(self, pod: Any, container: Any) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            "HOSTNAME": pod.metadata.name,
            "PYTHONUNBUFFERED": "1",
        }
        ns = pod.metadata.namespace
        for src in container.env_from or []:
            if src.secret_ref is not None:
                secret = await self.v1.read_namespaced_secret(src.secret_ref.name, ns)
                for k, v in (secret.data or {}).items():
                    env[(src.prefix or "") + k] = base64.b64decode(v).decode()
            if src.config_map_ref is not None:
                cm = await self.v1.read_namespaced_config_map(src.config_map_ref.name, ns)
                for k, v in (cm.data or {}).items():
                    env[(src.prefix or "") + k] = v
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = var.value or ""
                continue
            vf = var.value_from
            if vf.field_ref is not None:
                env[var.name] = {
                    "metadata.name": pod.metadata.name,
                    "metadata.namespace": ns,
                    "metadata.uid": pod.metadata.uid,
                    "spec.nodeName": NODE_NAME,
                    "status.podIP": POD_IP,
                    "status.hostIP": POD_IP,
                }.get(vf.field_ref.field_path, "")
            elif vf.secret_key_ref is not None:
                secret = await self.v1.read_namespaced_secret(vf.secret_key_ref.name, ns)
                raw = (secret.data or {}).get(vf.secret_key_ref.key)
                if raw is None:
                    raise KeyError(f"secret {vf.secret_key_ref.name} has no key {vf.secret_key_ref.key}")
                env[var.name] = base64.b64decode(raw).decode()
            elif vf.config_map_key_ref is not None:
                cm = await self.v1.read_namespaced_config_map(vf.config_map_key_ref.name, ns)
                env[var.name] = (cm.data or {})[vf.config_map_key_ref.key]
        return env

    async def supervise(self, run: PodRun, pod: Any) -> None:
        container = pod.spec.containers[0]
        policy = pod.spec.restart_policy or "Always"
        argv = translate_command([*(container.command or []), *(container.args or [])])
        try:
            env = await self.resolve_env(pod, container)
        except (ApiException, KeyError) as exc:
            await self.report(run, pod, "Pending", waiting=("CreateContainerConfigError", str(exc)))
            return
        log_path = self.log_dir / f"{run.namespace}_{run.name}.log"
        backoff = 1.0
        while not run.terminating:
            with open(log_path, "ab") as out:  # noqa: ASYNC230 - a local file, opened once per start
                run.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    stdout=out,
                    stderr=out,
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                    cwd=os.getcwd(),
                )
            run.started_at = _now()
            log.info("started %s/%s pid %d: %s", run.namespace, run.name, run.proc.pid, " ".join(argv))
            await self.report(run, pod, "Running", ready=True)
            code = await run.proc.wait()
            log.info("%s/%s pid %d exited with %d", run.namespace, run.name, run.proc.pid, code)
            if run.terminating:
                break
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                await self.report(run, pod, "Succeeded" if code == 0 else "Failed", exit_code=code)
                break
            run.restarts += 1
            await self.report(run, pod, "Running", exit_code=code, waiting=("CrashLoopBackOff", f"exited with {code}"))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
        run.done.set()

    async def report(
        self,
        run: PodRun,
        pod: Any,
        phase: str,
        *,
        ready: bool = False,
        exit_code: int | None = None,
        waiting: tuple[str, str] | None = None,
    ) -> None:
        container = pod.spec.containers[0]
        state: dict[str, Any]
        if waiting is not None:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        elif exit_code is not None:
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": run.started_at,
                    "finishedAt": _now(),
                }
            }
        else:
            state = {"running": {"startedAt": run.started_at}}
        cond = "True" if ready else "False"
        status = {
            "phase": phase,
            "hostIP": POD_IP,
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": run.started_at or _now(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                {"type": "Initialized", "status": "True", "lastTransitionTime": _now()},
                {"type": "ContainersReady", "status": cond, "lastTransitionTime": _now()},
                {"type": "Ready", "status": cond, "lastTransitionTime": _now()},
            ],
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image or "",
                    "imageID": "",
                    "ready": ready,
                    "started": ready,
                    "restartCount": run.restarts,
                    "state": state,
                }
            ],
        }
        try:
            await self.v1.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s/%s not reported: %s", run.namespace, run.name, exc.reason)

    # --- stopping a pod ----------------------------------------------------------------------

    def _kill_group(self, run: PodRun, sig: signal.Signals) -> None:
        if run.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, sig)

    async def terminate(self, run: PodRun, grace: float) -> None:
        if run.proc is not None and run.proc.returncode is None:
            log.info("stopping %s/%s pid %d: SIGTERM, grace %.0f s", run.namespace, run.name, run.proc.pid, grace)
            # Like a container runtime: SIGTERM to the main process only (the
            # worker decides what its children do), SIGKILL to everything.
            with contextlib.suppress(ProcessLookupError):
                run.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(run.proc.wait(), timeout=grace)
            except TimeoutError:
                log.info("%s/%s pid %d outlived its grace period: SIGKILL", run.namespace, run.name, run.proc.pid)
            self._kill_group(run, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await run.proc.wait()
        if run.supervisor is not None:
            run.supervisor.cancel()
        await self.finish_deletion(run.namespace, run.name, run.uid)

    async def finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self.v1.delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("could not complete deletion of %s/%s: %s", namespace, name, exc.reason)
        self.runs.pop(uid, None)

    def kill_all(self) -> None:
        for run in list(self.runs.values()):
            self._kill_group(run, signal.SIGKILL)


async def _main(args: argparse.Namespace) -> None:
    await config.load_kube_config(config_file=args.kubeconfig)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    async with client.ApiClient() as api:
        kubelet = HarnessKubelet(api, args.namespace, args.log_dir)
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, main_task.cancel)
        try:
            await kubelet.run()
        except asyncio.CancelledError:
            log.info("harness kubelet stopping: killing %d pod processes", len(kubelet.runs))
        finally:
            kubelet.kill_all()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only these namespaces (repeatable); default: all",
    )
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp/wpo-kubelet-logs"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
