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


def _operator(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from .controller import handlers  # noqa: F401 - registers the handlers
    from .controller.process.config import OperatorConfig, OperatorConfigError

    _logging()
    try:
        config = OperatorConfig.from_env()
    except OperatorConfigError as exc:
        print(f"workerpool operator: configuration error: {exc}", file=sys.stderr)
        return 2
    start_http_server(config.metrics_port)
    # --standalone (no Kopf peering): replicas elect a leader on a Lease of their
    # own (controller/leader.py); Kopf's peering would freeze equal-priority replicas.
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
    )
    return 0


def _logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Kopf logs every handled watch event at INFO: our own log lines say what happened.
    kopf_objects = logging.getLogger("kopf.objects")
    kopf_objects.setLevel(logging.WARNING)
    kopf_objects.addFilter(_not_a_held_eviction)


def _not_a_held_eviction(record: logging.LogRecord) -> bool:
    """Kopf logs every denied admission as an ERROR; a held eviction is a normal answer (logged by us)."""
    return not record.getMessage().startswith("Webhook 'eviction' failed permanently")


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
    p = sub.add_parser("operator", help="run the operator (Kopf), configured by WORKERPOOL_* env")
    p.set_defaults(func=_operator)
    submit.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
