"""`kubectl workerpool` (console script `kubectl-workerpool`): top, recycle and queue.

Exit codes: 0 done; 1 a recycle target was rejected; 2 an error (printed as
one sentence: a missing CRD, an unknown pool, RBAC, a timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from ..contracts import names
from ..contracts.resource import LastRecycle
from .client import PluginError, Pools
from .view import (
    Pool,
    UnreadableStatus,
    outcome_lines,
    queue_document,
    recycle_outcome,
    recycle_request,
    render_top,
    workers_document,
)

CLEAR = "\033[H\033[2J"


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", help="the kubeconfig context to use")
    common.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    ap = argparse.ArgumentParser(prog="kubectl workerpool", description="Worker pools, as their workers report them.")
    sub = ap.add_subparsers(dest="command", required=True)
    top = sub.add_parser("top", parents=[common], help="one row per worker process")
    top.add_argument("pool", nargs="?", help="one pool (default: every pool in the namespace)")
    top.add_argument("-A", "--all-namespaces", action="store_true")
    top.add_argument("-w", "--watch", action="store_true", help="redraw on every status change")
    top.add_argument("-o", "--output", choices=("json", "yaml"), help="the seed's WorkerInfo list")
    rec = sub.add_parser("recycle", parents=[common], help="recycle worker processes and wait for the result")
    rec.add_argument("pool")
    rec.add_argument("targets", nargs="*", metavar="WORKER[:PID]")
    rec.add_argument("--all", action="store_true", help="every worker of the pool (any idle process)")
    rec.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the operator (default 60)")
    queue = sub.add_parser("queue", parents=[common], help="the pool's queue (the seed's QueueStatus)")
    queue.add_argument("pool")
    queue.add_argument("-o", "--output", choices=("json", "yaml"), default="json")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "recycle" and bool(args.targets) == bool(args.all):
        print("error: give WORKER[:PID] targets or --all (not both)", file=sys.stderr)
        return 2
    if getattr(args, "all_namespaces", False) and args.pool:
        print("error: a pool name cannot be used with --all-namespaces", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args))
    except (PluginError, UnreadableStatus) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def run(args: argparse.Namespace) -> int:
    pools, default_ns = await Pools.connect(args.kubeconfig, args.context)
    namespace = None if getattr(args, "all_namespaces", False) else (args.namespace or default_ns)
    try:
        if args.command == "top":
            return await top(pools, namespace, args)
        if args.command == "recycle":
            assert namespace is not None
            return await recycle(pools, namespace, args)
        assert namespace is not None
        emit(queue_document(Pool.from_object(await pools.get(namespace, args.pool))), args.output)
        return 0
    finally:
        await pools.close()


async def top(pools: Pools, namespace: str | None, args: argparse.Namespace) -> int:
    if args.pool:
        assert namespace is not None
        objects = [await pools.get(namespace, args.pool)]  # an unknown pool is an error, not an empty list
    else:
        objects = await pools.list(namespace)
    show(objects, args.output)
    if not args.watch:
        return 0
    known = {_key(o): o for o in objects}
    drawn = {k: o.get("status") for k, o in known.items()}
    async for kind, obj in pools.watch(namespace, args.pool):
        if kind == "DELETED":
            known.pop(_key(obj), None)
        else:
            known[_key(obj)] = obj
        now = {k: o.get("status") for k, o in known.items()}
        if now != drawn:
            drawn = now
            show([known[k] for k in sorted(known)], args.output, redraw=True)
    return 0


def show(objects: list[dict[str, Any]], output: str | None, redraw: bool = False) -> None:
    pools = [Pool.from_object(o) for o in objects]
    if output:
        emit(workers_document(pools), output)
        return
    prefix = CLEAR if redraw and sys.stdout.isatty() else ("\n" if redraw else "")
    print(prefix + render_top(pools, dt.datetime.now(dt.UTC)), flush=True)


async def recycle(pools: Pools, namespace: str, args: argparse.Namespace) -> int:
    await pools.get(namespace, args.pool)  # a clear error for an unknown pool before anything is written
    request = recycle_request(args.targets, args.all, dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f"))
    await pools.annotate(namespace, args.pool, names.RECYCLE_ANNOTATION, request)
    print(f"{names.RECYCLE_ANNOTATION}={request} set on {namespace}/{args.pool}; waiting for the operator", flush=True)
    try:
        record = await asyncio.wait_for(_recorded(pools, namespace, args.pool, request), timeout=args.timeout)
    except TimeoutError:
        raise PluginError(
            f"the operator did not record the request within {args.timeout:g} s (is it running? see"
            f" `kubectl describe workerpool {args.pool} -n {namespace}`)"
        ) from None
    for line in outcome_lines(record):
        print(line)
    return 1 if any(r.status == "rejected" for r in record.results) else 0


async def _recorded(pools: Pools, namespace: str, name: str, request: str) -> LastRecycle:
    async for kind, obj in pools.watch(namespace, name):
        if kind == "DELETED":
            raise PluginError(f'WorkerPool "{name}" was deleted while waiting')
        record = recycle_outcome(Pool.from_object(obj), request)
        if record is not None:
            return record
    raise PluginError("the watch ended before the operator recorded the request")


def emit(document: Any, output: str) -> None:
    if output == "yaml":
        print(yaml.safe_dump(document, sort_keys=False), end="")
    else:
        print(json.dumps(document, indent=2))


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


if __name__ == "__main__":
    sys.exit(main())
