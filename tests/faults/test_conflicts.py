"""The API server answering 409 Conflict to the operator's writes: retried, no decision lost.

The 409s are real API responses: a validating admission webhook (a small HTTPS
server in this test, registered with the real kube-apiserver) denies the next
N pod creates, pod deletes or status writes made by the operator's identity
with code 409, armed per phase of the test.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from devcluster.certs import make_pki
from devcluster.client import Client
from devcluster.harness import READY, RECYCLE, SCALE, OperatorProcess, Pools, pool_manifest, wait_until
from devcluster.identity import service_account
from devcluster.redis_server import RedisServer
from devcluster.stack import DevStack

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

CREATE, DELETE, STATUS = "pods CREATE", "pods DELETE", "workerpools/status UPDATE"


class ConflictWebhook:
    """Denies the next N writes of one kind by one user with 409 (`arm`)."""

    def __init__(self, directory: Path, username: str) -> None:
        self.pki = make_pki(directory)
        self.username = username
        self.armed: Counter[str] = Counter()  # denials still to make, per kind
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
                deny = self.armed[kind] > 0
                self.armed[kind] -= deny
                self.denied[kind] += deny
        response: dict[str, Any] = {"uid": request["uid"], "allowed": not deny}
        if deny:
            response["status"] = {"code": 409, "reason": "Conflict", "message": f"injected conflict on {kind}"}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    def arm(self, kind: str, times: int) -> int:
        """Deny the next `times` writes of `kind`; returns the denials so far."""
        with self.lock:
            self.armed[kind] = times
            return self.denied[kind]

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


def drain(pubsub: redis.client.PubSub, quiet: float = 1.0) -> list[dict[str, Any]]:
    """Every message received so far (and until `quiet` seconds pass without one)."""
    out = []
    until = time.monotonic() + quiet
    while time.monotonic() < until:
        message = pubsub.get_message(timeout=0.1)  # None also for the (ignored) subscribe reply
        if message is not None:
            out.append(message)
            until = time.monotonic() + quiet
    return out


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
            # Scale-up: the first creates and status writes are refused.
            webhook.arm(CREATE, 2)
            webhook.arm(STATUS, 2)
            manifest = pool_manifest("p", redis_server.url, minWorkers=3, maxWorkers=3)
            manifest["spec"]["scaling"] = {"scaleDownDelaySeconds": 1}
            pools.apply(manifest)
            status = pools.wait_status("p", lambda s: s.get("readyWorkers") == 3, "3 ready workers", READY + SCALE)
            assert webhook.denied[CREATE] == 2 and webhook.denied[STATUS] == 2, webhook.denied
            assert len(pools.live_pods("p")) == 3, "a retried create made a duplicate"

            # A recycle whose status writes are refused: published once, recorded once written.
            before = webhook.arm(STATUS, 2)
            target = status["workerDetails"][0]["workerId"]
            pools.annotate("p", target)
            status = pools.wait_status(
                "p", lambda s: s.get("lastRecycle", {}).get("request") == target, "the recycle recorded", RECYCLE
            )
            assert webhook.denied[STATUS] == before + 2, webhook.denied
            assert [r["status"] for r in status["lastRecycle"]["results"]] == ["recycle_requested"]

            # Scale down: the refused deletes are retried at once, not after the deletion timeout.
            webhook.arm(DELETE, 2)
            manifest["spec"].update(minWorkers=1, maxWorkers=1)
            pools.apply(manifest)
            wait_until(lambda: len(pools.live_pods("p")) == 1, timeout=SCALE, what="scaled down to 1 pod")
            pools.wait_status("p", lambda s: s.get("workers") == 1 and s.get("desiredWorkers") == 1, "status", SCALE)
            assert webhook.denied[DELETE] == 2, webhook.denied

            conflicts = op.metric("workerpool_reconcile_errors_total", namespace=namespace, pool="p", reason="api409")
            assert conflicts >= 8, conflicts  # every refusal reached the operator as a 409
            messages = drain(commands)
            assert len(messages) == 1, f"the recycle was published {len(messages)} times"
        finally:
            commands.close()
            op.stop()
