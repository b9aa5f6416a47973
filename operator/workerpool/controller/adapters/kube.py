"""The only module that talks to the Kubernetes API for the operator's own actions
(Kopf does the watching). Clients are created lazily, never at import time."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from yarl import URL

from ...contracts import names
from ..process.ratelimit import Priority, WriteLimiter

log = logging.getLogger(__name__)

__all__ = ["ApiException", "Kube"]


def resolve_proxy_once(api: client.ApiClient) -> None:
    """Look up the environment's proxy for the API server once, not on every request.

    kubernetes_asyncio opens its aiohttp session with `trust_env=True`, which
    makes aiohttp read the proxy variables and ~/.netrc on a thread for every
    request: 12 % of the operator's CPU at 1000 pools (docs/performance.md).
    The proxy (HTTPS_PROXY/NO_PROXY, as aiohttp would resolve them) is
    resolved here and set on the client, and the per-request look-ups are
    switched off. The API server's credentials come from the kubeconfig or the
    ServiceAccount, never from ~/.netrc. There is no public way to pass
    `trust_env` through kubernetes_asyncio, hence its private attribute
    (tests/unit/test_kube_client.py fails if aiohttp renames it).
    """
    rest = api.rest_client
    if not rest.proxy:
        try:
            proxy, auth = get_env_proxy_for_url(URL(str(api.configuration.host)))
        except LookupError:  # no proxy for this host
            pass
        else:
            rest.proxy = str(proxy)
            if auth is not None:
                rest.proxy_headers = {**(rest.proxy_headers or {}), "Proxy-Authorization": auth.encode()}
    rest.pool_manager._trust_env = False


MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


async def _unless_gone(call: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    """The call's answer, or None when the object is gone (404)."""
    try:
        return await call
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


class _Clients:
    """The API clients, and the gate every write passes (the client-side rate limiter)."""

    def __init__(self, api: client.ApiClient, limiter: WriteLimiter | None = None) -> None:
        self.api = api
        self.limiter = limiter
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    def write_backlog(self) -> int:
        """Writes waiting for their turn in the limiter now (0 without one)."""
        return self.limiter.queued if self.limiter is not None else 0

    @contextlib.asynccontextmanager
    async def _write(self, namespace: str, priority: Priority = Priority.POD) -> AsyncIterator[None]:
        """Every write waits for the client-side limiter first (reads and watches do not), its
        namespace's turn among the others', and holds its turn until the API server answers."""
        if self.limiter is None:
            yield
            return
        async with self.limiter.write(priority, namespace):
            yield

    def _unused(self) -> None:
        """Inside `_write`: nothing was sent after all; the budget gets its token back."""
        if self.limiter is not None:
            self.limiter.unused()


class _PodPatches(_Clients):
    """Patches of worker pods: annotations (marks, a held eviction) and a readiness gate's condition."""

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        # Not rate-limited: it marks a pod whose eviction was just held (one per held pod a minute).
        await self._patch_annotations(namespace, name, dict(annotations))

    async def mark_pod(
        self, namespace: str, name: str, patch: dict[str, str | None], still: Callable[[], bool] | None = None
    ) -> dict[str, Any] | None:
        """Set (a value) or remove (None) a worker pod's node-autoscaler annotations: the patched pod,
        or None when the pod is gone or `still()`, asked when the write's turn comes, says no more.
        A removal waits behind status writes (Priority.UNMARK)."""
        removal = all(value is None for value in patch.values())
        async with self._write(namespace, Priority.UNMARK if removal else Priority.MARK):
            if still is not None and not still():
                self._unused()
                return None
            return await _unless_gone(self._patch_annotations(namespace, name, patch))

    async def set_pod_condition(self, namespace: str, name: str, condition: dict[str, str]) -> dict[str, Any] | None:
        """Set one condition of a pod's status (a readiness gate's): the patched pod, or None when it is gone."""
        async with self._write(namespace, Priority.MARK):
            # A strategic merge: conditions merge by type, so the kubelet's own stay.
            body = {"status": {"conditions": [condition]}}
            patch = self.core.patch_namespaced_pod_status(name, namespace, body, _content_type=STRATEGIC)  # type: ignore[call-arg]
            return await _unless_gone(self._pod(patch))

    async def _patch_annotations(self, namespace: str, name: str, patch: dict[str, str | None]) -> dict[str, Any]:
        body = {"metadata": {"annotations": patch}}
        return await self._pod(self.core.patch_namespaced_pod(name, namespace, body, _content_type=MERGE))  # type: ignore[call-arg]

    async def _pod(self, call: Awaitable[Any]) -> dict[str, Any]:
        return dict(self.api.sanitize_for_serialization(await call))


class Kube(_PodPatches):
    @classmethod
    async def connect(cls, limiter: WriteLimiter | None = None) -> Kube:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        api = client.ApiClient()
        resolve_proxy_once(api)
        return cls(api, limiter)

    async def close(self) -> None:
        await self.api.close()

    async def list_pods(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        selector = f"{names.POOL_LABEL}={pool},{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}"
        resp = await self.core.list_namespaced_pod(namespace, label_selector=selector)
        return [self.api.sanitize_for_serialization(p) for p in resp.items]

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._write(namespace):
            created = await self.core.create_namespaced_pod(namespace, cast(Any, body))
            return dict(self.api.sanitize_for_serialization(created))

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Delete with a uid precondition (never a same-named newer pod).

        Done when the pod is gone or being deleted, or the name now belongs to
        another pod (the precondition's 409). A 409 that leaves *this* pod in
        place (e.g. an admission webhook's) is raised, so that the deletion is
        retried instead of being taken as done.
        """
        async with self._write(namespace):
            try:
                await self.core.delete_namespaced_pod(
                    name, namespace, body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
                )
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
                try:
                    meta = (await self.core.read_namespaced_pod(name, namespace)).metadata
                except ApiException as again:
                    if again.status == 404:
                        return
                    raise
                if meta.uid == uid and meta.deletion_timestamp is None:
                    raise

    async def patch_status(
        self, namespace: str, name: str, status: Callable[[], dict[str, Any] | None], urgent: bool = False
    ) -> bool:
        """Write the patch `status()` gives when the write's turn comes (None: nothing left to write).

        True when a patch was sent. `urgent`: with the Events' priority, not behind every pool's status.
        """
        async with self._write(namespace, Priority.EVENT if urgent else Priority.STATUS):
            patch = status()
            if patch is None:
                self._unused()
                return False
            # A JSON merge patch of the status subresource: only the operator writes status.
            await self.custom.patch_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
                {"status": patch},
                _content_type=MERGE,  # type: ignore[call-arg]
            )
            return True

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """The decoded value, or None when the Secret or key does not exist."""
        stored = await self.read_secret(namespace, name)
        raw = stored[0].get(key) if stored is not None else None
        return raw.decode() if raw is not None else None

    async def event(self, pool: dict[str, str], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the WorkerPool (what `kubectl describe` shows)."""
        async with self._write(pool["namespace"], Priority.EVENT):
            try:
                await self.core.create_namespaced_event(
                    pool["namespace"], cast(Any, event_body(pool, type_, reason, message))
                )
            except ApiException as exc:  # an event is worth a log line, not a failed reconcile
                log.warning("event %s on %s/%s not posted: %s", reason, pool["namespace"], pool["name"], exc.reason)

    # --- the eviction webhook and leader election ------------------------------------------

    async def set_finalizers(
        self, namespace: str, name: str, resource_version: str, finalizers: list[str]
    ) -> dict[str, Any] | None:
        # A JSON patch guarded by the version read: never drops a finalizer someone else just added.
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
        ]
        async with self._write(namespace, Priority.EVENT):
            call = self.custom.patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
                patch,
                _content_type=JSON_PATCH,  # type: ignore[call-arg]
            )
            try:
                return dict(await call)
            except ApiException as exc:
                if exc.status in (404, 409, 422):  # gone, or changed since it was read (the test op failed)
                    return None
                raise

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, bytes], str] | None:
        """The decoded data and resourceVersion, or None when there is no such Secret."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        return data, secret.metadata.resource_version

    async def write_secret(self, namespace: str, name: str, data: dict[str, bytes], version: str | None) -> None:
        """Create (version None) or replace at `version`; a concurrent writer makes it a 409."""
        async with self._write(namespace):
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE},
                },
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
            if version is None:
                await self.core.create_namespaced_secret(namespace, cast(Any, body))
            else:
                body["metadata"]["resourceVersion"] = version  # type: ignore[index]
                await self.core.replace_namespaced_secret(name, namespace, cast(Any, body))

    async def inject_ca_bundle(self, name: str, ca_pem: bytes) -> None:
        """Set every webhook's clientConfig.caBundle of one ValidatingWebhookConfiguration (when it differs)."""
        async with self._write(""):  # cluster-scoped: the operator's own turn
            config = await self.admission.read_validating_webhook_configuration(name)
            bundle = base64.b64encode(ca_pem).decode()
            patch = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                for i, hook in enumerate(config.webhooks or [])
                if hook.client_config.ca_bundle != bundle
            ]
            if patch:
                # A JSON patch of caBundle alone: the rest stays the chart's (and GitOps sees no drift there).
                await self.admission.patch_validating_webhook_configuration(
                    name,
                    patch,
                    _content_type="application/json-patch+json",  # type: ignore[call-arg]
                )
                log.info("caBundle of ValidatingWebhookConfiguration %s updated", name)

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            lease = await self.coordination.read_namespaced_lease(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(self.api.sanitize_for_serialization(lease))

    async def list_leases(self, namespace: str) -> list[dict[str, Any]]:
        leases = await self.coordination.list_namespaced_lease(namespace)
        return [dict(self.api.sanitize_for_serialization(lease)) for lease in leases.items]

    async def write_lease(self, namespace: str, name: str, body: dict[str, Any], create: bool) -> None:
        # Not rate-limited: a renewal queued behind a burst of writes would cost the leadership.
        if create:
            await self.coordination.create_namespaced_lease(namespace, cast(Any, body))
        else:
            await self.coordination.replace_namespaced_lease(name, namespace, cast(Any, body))


def event_body(pool: dict[str, str], type_: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event on the WorkerPool `pool` (its name, namespace and uid)."""
    now = dt.datetime.now(dt.UTC)
    return {
        "metadata": {"name": f"{pool['name']}.{uuid.uuid4().hex[:12]}", "namespace": pool["namespace"]},
        "involvedObject": {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": pool["name"],
            "namespace": pool["namespace"],
            "uid": pool["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "workerpool-operator"},
        "reportingComponent": "workerpool-operator",
        "reportingInstance": "workerpool-operator",
        "action": reason,
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "count": 1,
    }
