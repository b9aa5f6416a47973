"""The `workerpool` command: one entry point, one sub-command per role."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .worker import submit

Command = Callable[[argparse.Namespace], int]


def _version(_: argparse.Namespace) -> int:
    print(f"workerpool {__version__}")
    return 0


def _worker(_: argparse.Namespace) -> int:
    from .worker.config import WorkerConfigError
    from .worker.runtime import run_worker

    _logging()
    try:
        return run_worker()
    except WorkerConfigError as exc:
        print(f"workerpool worker: configuration error: {exc}", file=sys.stderr)
        return 2


def _logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workerpool",
        description="Kubernetes operator and worker runtime for pools of workflow workers.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_version)
    p = sub.add_parser("worker", help="run a worker: a pool of long-lived processes fed from the queue")
    p.set_defaults(func=_worker)
    submit.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
