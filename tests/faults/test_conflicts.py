"""The API server answering 409 Conflict to the operator's writes: retried, no decision lost.

The 409s are real API responses: a validating admission webhook (a small HTTPS
server in this test, registered with the real kube-apiserver) denies every
other pod create, pod delete and status write made by the operator's
identity with code 409, a bounded number of times per kind of write.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from workerpool.devcluster.certs import make_pki
from workerpool.devcluster.redis_server import RedisServer
from workerpool.devcluster.stack import DevStack

from ..e2e.operator_harness import READY, RECYCLE, SCALE, OperatorProcess, Pools, pool_manifest, wait_until
from ..integration.workers import Client
from .identity import service_account

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

DENIALS_PER_KIND = 3
KINDS = ("pods CREATE", "pods DELETE", "workerpools/status UPDATE")


class ConflictWebhook:
    """Denies every other matching write of one user with 409, up to a limit per kind."""

    def __init__(self, directory: Path, username: str) -> None:
        self.pki = make_pki(directory)
        self.username = username
        self.seen: Counter[str] = Counter()
        self.denied: Counter[str] = Counter()
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = json.dumps(webhook.review(review["request"])).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # quiet: the counters are the record
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self.pki.serving_crt, self.pki.serving_key)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def review(self, request: dict[str, Any]) -> dict[str, Any]:
        sub = request.get("subResource")
        kind = request["resource"]["resource"] + (f"/{sub}" if sub else "") + f" {request['operation']}"
        deny = False
        if request["userInfo"]["username"] == self.username:
            with self.lock:
                self.seen[kind] += 1
                deny = self.seen[kind] % 2 == 1 and self.denied[kind] < DENIALS_PER_KIND
                self.denied[kind] += deny
        response: dict[str, Any] = {"uid": request["uid"], "allowed": not deny}
        if deny:
            response["status"] = {"code": 409, "reason": "Conflict", "message": f"injected conflict on {kind}"}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    def configuration(self, name: str, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "conflicts.faults.workerpool.test",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{self.server.server_address[1]}/review",
                        "caBundle": base64.b64encode(self.pki.ca_crt.read_bytes()).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "DELETE"],
                            "resources": ["pods"],
                        },
                        {
                            "apiGroups": ["bifrost.dev"],
                            "apiVersions": ["*"],
                            "operations": ["UPDATE"],
                            "resources": ["workerpools/status"],
                        },
                    ],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        }


@contextmanager
def conflict_webhook(stack: DevStack, directory: Path, username: str, namespace: str) -> Iterator[ConflictWebhook]:
    webhook = ConflictWebhook(directory, username)
    webhook.thread.start()
    name = f"conflicts-{namespace}"
    stack.cluster.apply(json.dumps(webhook.configuration(name, namespace)))
    try:
        yield webhook
    finally:
        # Before the namespace goes: the namespace controller's deletes must not meet it.
        stack.cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
        webhook.server.shutdown()
        webhook.server.server_close()


def test_conflicts_are_retried_without_losing_a_decision(
    stack: DevStack, namespace: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    pools, client = Pools(stack, namespace), Client(redis_server.url)
    with (
        service_account(stack.cluster, namespace, tmp_path, "conflicted") as identity,
        conflict_webhook(stack, tmp_path / "webhook", identity.username, namespace) as webhook,
    ):
        op = OperatorProcess(stack, namespace, tmp_path, kubeconfig=identity.kubeconfig).start()
        commands = client.r.pubsub(ignore_subscribe_messages=True)
        commands.psubscribe("worker:*:commands")
        try:
            manifest = pool_manifest("p", redis_server.url, minWorkers=3, maxWorkers=3)
            manifest["spec"]["scaling"] = {"scaleDownDelaySeconds": 1}
            pools.apply(manifest)
            status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 3, "3 ready workers", READY + SCALE)
            assert len(pools.live_pods("p")) == 3, "a retried create made a duplicate"

            # A recycle whose status write meets a 409: published once, recorded once written.
            target = status["workerDetails"][0]["workerId"]
            pools.annotate("p", target)
            status = pools.wait_status(
                "p", lambda s: s.get("lastRecycle", {}).get("request") == target, "the recycle recorded", RECYCLE
            )
            published = [r for r in status["lastRecycle"]["results"] if r["status"] == "recycle_requested"]
            assert len(published) == 1
            messages = wait_until(
                lambda: [m for m in iter(lambda: commands.get_message(timeout=0.2), None)] or None,
                timeout=RECYCLE,
                what="the recycle command on Redis",
            )
            assert len(messages) == 1, messages

            # Scale down: the denied delete is retried at once, not after the deletion timeout.
            manifest["spec"].update(minWorkers=1, maxWorkers=1)
            pools.apply(manifest)
            wait_until(lambda: len(pools.live_pods("p")) == 1, timeout=SCALE, what="scaled down to 1 pod")
            pools.wait_status("p", lambda s: s.get("workers") == 1 and s.get("desiredWorkers") == 1, "status", SCALE)

            assert all(webhook.denied[k] > 0 for k in KINDS), f"not every kind of write met a 409: {webhook.denied}"
            conflicts = op.metric("workerpool_reconcile_errors_total", namespace=namespace, pool="p", reason="api409")
            assert conflicts > 0
            assert len(messages) + len(list(iter(lambda: commands.get_message(timeout=0.5), None))) == 1, (
                "the recycle was published again"
            )
        finally:
            commands.close()
            op.stop()
