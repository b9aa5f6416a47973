"""The API client resolves the environment's proxy once and then stops looking it up per request."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from workerpool.controller.adapters.kube import resolve_proxy_once

API = "https://10.96.0.1:443"


async def api_client() -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = API
    return client.ApiClient(configuration)


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


async def test_per_request_environment_lookups_are_off_and_no_proxy_is_invented() -> None:
    api = await api_client()
    assert api.rest_client.pool_manager.trust_env  # what kubernetes_asyncio does...
    resolve_proxy_once(api)
    assert not api.rest_client.pool_manager.trust_env  # ...and what we make of it
    assert not api.rest_client.proxy
    await api.close()


async def test_the_environments_proxy_is_kept_with_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.corp:3128")
    api = await api_client()
    resolve_proxy_once(api)
    assert api.rest_client.proxy == "http://proxy.corp:3128"
    assert api.rest_client.proxy_headers["Proxy-Authorization"].startswith("Basic ")
    await api.close()


async def test_no_proxy_still_bypasses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "10.96.0.1")
    api = await api_client()
    resolve_proxy_once(api)
    assert not api.rest_client.proxy
    await api.close()
