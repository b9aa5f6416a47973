"""The plugin's only I/O: WorkerPools read, watched and annotated with the user's kubeconfig,
as kubectl would (its file, context and namespace), and API errors turned into plain sentences."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ..contracts import names


class PluginError(Exception):
    """Something the user can act on; printed without a traceback (exit code 2)."""


class Pools:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)

    @classmethod
    async def connect(cls, kubeconfig: str | None, context: str | None) -> tuple[Pools, str]:
        """A client for the chosen kubeconfig and context, and that context's namespace."""
        require_kubeconfig(kubeconfig)
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if chosen is None:
                raise PluginError(f'context "{context}" not found in the kubeconfig')
            configuration = client.Configuration()
            await config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        except config.ConfigException as exc:
            raise PluginError(f"cannot use the kubeconfig: {exc}") from None
        namespace = str((chosen.get("context") or {}).get("namespace") or "default")
        return cls(client.ApiClient(configuration)), namespace

    async def close(self) -> None:
        await self.api.close()

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return dict(
                await self.custom.get_namespaced_custom_object(
                    names.GROUP, names.VERSION, namespace, names.PLURAL, name
                )
            )
        except ApiException as exc:
            raise await self._explain(exc, f'WorkerPool "{name}" in namespace "{namespace}"') from None

    async def list(self, namespace: str | None) -> list[dict[str, Any]]:
        where = f'namespace "{namespace}"' if namespace else "all namespaces"
        try:
            if namespace is None:
                found = await self.custom.list_cluster_custom_object(names.GROUP, names.VERSION, names.PLURAL)
            else:
                found = await self.custom.list_namespaced_custom_object(
                    names.GROUP, names.VERSION, namespace, names.PLURAL
                )
        except ApiException as exc:
            raise await self._explain(exc, f"WorkerPools in {where}") from None
        return sorted(found.get("items", []), key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    async def watch(self, namespace: str | None, name: str | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, object) for every change, starting with the current objects (a watch, not polling)."""
        args: dict[str, Any] = {"field_selector": f"metadata.name={name}"} if name else {}
        call: Any = self.custom.list_namespaced_custom_object
        pos: tuple[str, ...] = (names.GROUP, names.VERSION, namespace or "", names.PLURAL)
        if namespace is None:
            call, pos = self.custom.list_cluster_custom_object, (names.GROUP, names.VERSION, names.PLURAL)
        w = watch.Watch()
        try:
            async with w.stream(call, *pos, **args) as stream:
                async for event in stream:
                    yield str(event["type"]), dict(event["object"])
        except ApiException as exc:
            raise await self._explain(exc, "WorkerPools") from None
        finally:
            w.stop()

    async def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        body = {"metadata": {"annotations": {key: value}}}
        try:
            await self.custom.patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
                body,
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )
        except ApiException as exc:
            raise await self._explain(exc, f'WorkerPool "{name}" in namespace "{namespace}"', "patch") from None

    async def _explain(self, exc: ApiException, what: str, verb: str = "get") -> PluginError:
        if exc.status == 403:
            return PluginError(f"forbidden: you may not {verb} {what}: {_message(exc)}")
        if exc.status == 404:
            if not await self._crd_served():
                return PluginError(
                    f"the WorkerPool CRD ({names.PLURAL}.{names.GROUP}/{names.VERSION}) is not installed in this"
                    " cluster: install the workerpool-operator chart (or crds/) first"
                )
            return PluginError(f"{what} not found")
        return PluginError(f"the API server refused ({exc.status} {exc.reason}): {_message(exc)}")

    async def _crd_served(self) -> bool:
        try:
            served = await self.custom.get_api_resources(names.GROUP, names.VERSION)
        except ApiException:
            return False
        return any(r.name == names.PLURAL for r in served.resources or [])


def require_kubeconfig(kubeconfig: str | None) -> None:
    """A missing kubeconfig as one sentence (kubernetes_asyncio's own message is about a missing key)."""
    files = [kubeconfig] if kubeconfig else os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
    if not any(Path(f).expanduser().is_file() for f in files if f):
        raise PluginError(f"no kubeconfig at {os.pathsep.join(files)} (use --kubeconfig or set KUBECONFIG)")


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
