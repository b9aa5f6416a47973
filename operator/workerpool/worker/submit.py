"""`workerpool submit`: enqueue executions, optionally wait for their results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from ..contracts.names import DEFAULT_QUEUE_KEY, RESULTS_CHANNEL, exec_result_key
from ..contracts.wire import ExecutionContext, ExecutionResult, WireFormatError, parse_json_message
from ..redis_connect import RedisAccess, redis_client
from .queue import Queue


def parse_params(pairs: list[str], params_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(params_json) if params_json else {}
    if not isinstance(params, dict):
        raise ValueError("--params-json must be a JSON object")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value  # a bare string
    return params


async def submit(args: argparse.Namespace) -> int:
    params = parse_params(args.param, args.params_json)
    context = ExecutionContext(function=args.function, parameters=params, timeout_seconds=args.timeout)
    access = RedisAccess(args.redis_url)
    client = redis_client(access, name="workerpool-submit", ca_file=os.environ.get("REDIS_TLS_CA_FILE"))
    queue = Queue(client, args.queue_key, durable=access.has_replicas)
    ids = [f"{args.id_prefix}{uuid.uuid4().hex[:12]}" for _ in range(args.count)]
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    if args.wait:
        await pubsub.subscribe(RESULTS_CHANNEL)  # before enqueueing: no result can be missed
    t0 = time.monotonic()
    for eid in ids:
        await queue.enqueue(eid, context.model_dump(mode="json", exclude_none=True))
    print(f"submitted {len(ids)} x {args.function} to {args.queue_key}", file=sys.stderr)
    if not args.wait:
        for eid in ids:
            print(eid)
        await client.aclose()
        return 0
    results = await collect(client, pubsub, set(ids), args.wait_timeout)
    await pubsub.aclose()
    await client.aclose()
    ok = sum(1 for r in results.values() if r.success)
    for eid in ids:
        r = results.get(eid)
        print(json.dumps(r.model_dump(mode="json") if r else {"execution_id": eid, "missing": True}))
    print(
        f"{len(results)}/{len(ids)} results in {time.monotonic() - t0:.2f} s: "
        f"{ok} succeeded, {len(results) - ok} failed",
        file=sys.stderr,
    )
    return 0 if len(results) == len(ids) else 1


async def collect(
    client: aioredis.Redis, pubsub: Any, wanted: set[str], wait_timeout: float
) -> dict[str, ExecutionResult]:
    results: dict[str, ExecutionResult] = {}
    deadline = time.monotonic() + wait_timeout
    while len(results) < len(wanted) and time.monotonic() < deadline:
        msg = await pubsub.get_message(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
        if msg is None:
            continue
        try:
            r = parse_json_message(ExecutionResult, msg["data"], what="result")
        except WireFormatError:
            continue
        if r.execution_id in wanted:
            results[r.execution_id] = r
    for eid in wanted - results.keys():  # published before we listened, or pub/sub lost it
        raw = await client.get(exec_result_key(eid))
        if raw is not None:
            results[eid] = parse_json_message(ExecutionResult, raw, what="result")
    return results


def add_parser(sub: Any) -> None:
    import os

    p = sub.add_parser("submit", help="enqueue executions (and wait for their results)")
    p.add_argument("function", help="module:callable, e.g. workerpool.worker.functions:sleep")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument; VALUE is JSON if it parses, else a string (repeatable)",
    )
    p.add_argument("--params-json", help="all keyword arguments as one JSON object")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=None, help="timeout_seconds of each execution")
    p.add_argument("--wait", action="store_true", help="wait for every result and print them")
    p.add_argument("--wait-timeout", type=float, default=300.0)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--queue-key", default=os.environ.get("QUEUE_KEY", DEFAULT_QUEUE_KEY))
    p.add_argument("--id-prefix", default="exec-")
    p.set_defaults(func=lambda args: asyncio.run(submit(args)))
