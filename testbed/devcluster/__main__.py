"""TEST INFRASTRUCTURE — `python -m devcluster up|down --dir DIR`.

`up` runs the local stack in the foreground until SIGTERM, writing
DIR/env (two `export` lines) once everything is ready, and
DIR/containerd.sock.path (where `make image` loads a rebuilt image);
`make cluster-up` starts it in the background and prints the env file.
`down` stops a running `up`, which removes everything it made.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .node import mounts_under
from .procs import pid_alive
from .stack import DevStack


def up(directory: Path, sentinel: bool = False, kwok_nodes: int = 0) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    env_file = directory / "env"
    env_file.unlink(missing_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    workdir = directory / "stack"
    if mounts_under(workdir):
        print(f"{workdir} still has mounts (a previous run did not stop cleanly): make cluster-down", file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh cluster each time: no objects from the last one
    with DevStack(workdir, rabbitmq=True, sentinel=sentinel, kwok_nodes=kwok_nodes) as stack:
        assert stack.redis is not None and stack.rabbitmq is not None
        pids = stack.pids()
        (directory / "pid").write_text(str(os.getpid()))
        (directory / "containerd.sock.path").write_text(str(stack.node.containerd_socket))
        env_file.write_text(
            f"export KUBECONFIG={stack.cluster.kubeconfig}\nexport REDIS_URL={stack.redis.url}\n"
            f"export RABBITMQ_URL={stack.rabbitmq.url}\n" + sentinel_exports(stack)
        )
        logging.info("local stack ready; logs in %s", stack.workdir)
        while not stop.wait(1):
            pass
        logging.info("stopping the local stack")
    (directory / "pid").unlink(missing_ok=True)
    (directory / "containerd.sock.path").unlink(missing_ok=True)
    env_file.unlink(missing_ok=True)
    if leftovers := stack.leftovers(pids):
        logging.error("left behind on this machine: %s", "; ".join(leftovers))
        return 1
    logging.info("stopped; nothing left behind")
    return 0


def sentinel_exports(stack: DevStack) -> str:
    """The Sentinel topology's URLs (the workers' ACL user; the operator's own), CA and users."""
    s = stack.sentinel
    if s is None:
        return ""
    from workerpool.contracts.redis_acl import OPERATOR, WORKER

    ca = f"export REDIS_TLS_CA_FILE={s.tls.ca}\n" if s.tls is not None else ""
    return (
        f"export REDIS_SENTINEL_URL={s.url(WORKER.user)}\n{ca}"
        f"export WORKERPOOL_REDIS_USERNAME={OPERATOR.user}\n"
        f"export WORKERPOOL_REDIS_PASSWORD={s.passwords[OPERATOR.user]}\n"
        f"export WORKERPOOL_REDIS_IDENTITY_HOSTS={s.host}\n"
    )


def down(directory: Path) -> int:
    pid_file = directory / "pid"
    if not pid_file.exists():
        print("no local cluster is running", file=sys.stderr)
        return 0
    pid = int(pid_file.read_text())
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 180  # a clean stop drains the node's pods
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    (directory / "env").unlink(missing_ok=True)
    log = (directory / "up.log").read_text(errors="replace") if (directory / "up.log").exists() else ""
    left = [line for line in log.splitlines()[-5:] if "left behind on this machine" in line]
    print(left[0] if left else "local cluster stopped; nothing left behind", file=sys.stderr)
    return 1 if left else 0


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m devcluster")
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--dir", type=Path, default=Path(".cluster"))
    ap.add_argument("--sentinel", action="store_true", help="also Redis behind Sentinel (TLS, ACL users)")
    ap.add_argument("--kwok-nodes", type=int, default=0, help="also this many kwok nodes (devcluster.kwok)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.action == "up":
        return up(args.dir.resolve(), args.sentinel, args.kwok_nodes)
    return down(args.dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
