"""The code that runs inside each long-lived pool process.

A process runs one execution at a time: it receives
`("run", execution_id, function, parameters)` on its pipe, calls
`module:callable(**parameters)` and answers
`("done", execution_id, success, result, error, error_type, duration_ms)`.
`("stop",)` or a closed pipe ends it. Signals are left at their defaults so
the pool can SIGTERM / SIGKILL it on timeout or recycle.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

Message = tuple[Any, ...]


def resolve(spec: str, cache: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """`package.module:attr.path` -> the callable (imported once per process)."""
    fn = cache.get(spec)
    if fn is None:
        module_name, _, attr_path = spec.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr_path.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{spec} is not callable")
        fn = cache[spec] = obj
    return fn


def run_one(function: str, parameters: dict[str, Any], cache: dict[str, Callable[..., Any]]) -> Message:
    """Run one execution; never raises (the result says what happened)."""
    start = time.perf_counter()
    try:
        fn = resolve(function, cache)
        result = fn(**parameters)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        json.dumps(result)  # results travel as JSON: fail here, not in the pool
        return (True, result, None, None, (time.perf_counter() - start) * 1000)
    except BaseException as exc:  # a function's SystemExit or KeyboardInterrupt is its failure too
        return (False, None, str(exc) or repr(exc), type(exc).__name__, (time.perf_counter() - start) * 1000)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def child_main(conn: Connection) -> None:
    """Entry point of a pool process."""
    # Ctrl-C in a terminal goes to the whole process group: only the worker decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cache: dict[str, Callable[..., Any]] = {}
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        _, execution_id, function, parameters = msg
        conn.send(("done", execution_id, *run_one(function, parameters, cache)))
