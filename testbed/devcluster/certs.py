"""TEST INFRASTRUCTURE — a throwaway CA, the API server's serving cert, client
certs (admin, the node's kubelet, the API server's kubelet client) and
service-account keys, made with the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

FRONT_PROXY_CLIENT = "front-proxy-client"


class Pki:
    """The files of a throwaway PKI in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_crt, self.ca_key = directory / "ca.crt", directory / "ca.key"
        self.serving_crt, self.serving_key = directory / "apiserver.crt", directory / "apiserver.key"
        self.admin_crt, self.admin_key = directory / "admin.crt", directory / "admin.key"
        self.sa_key, self.sa_pub = directory / "sa.key", directory / "sa.pub"
        self.node_crt, self.node_key = directory / "node.crt", directory / "node.key"
        self.kubelet_client_crt = directory / "apiserver-kubelet-client.crt"
        self.kubelet_client_key = directory / "apiserver-kubelet-client.key"
        # The aggregation layer (kubeadm's front-proxy): the API server proxies to an
        # extension API server (KEDA's external metrics) as `front-proxy-client`,
        # signed by a CA of its own that the extension server trusts for request headers.
        self.front_proxy_ca_crt = directory / "front-proxy-ca.crt"
        self.front_proxy_ca_key = directory / "front-proxy-ca.key"
        self.front_proxy_crt = directory / "front-proxy-client.crt"
        self.front_proxy_key = directory / "front-proxy-client.key"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificate(subject: str, key: Path, crt: Path, *extra: str) -> None:
    """A new RSA key and a 30-day certificate (self-signed unless `extra` names a CA)."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        subject,
        *extra,
        "-keyout",
        str(key),
        "-out",
        str(crt),
    )


def make_pki(directory: Path, *, server_ips: tuple[str, ...] = ("127.0.0.1",), node_name: str = "") -> Pki:
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    signed_by_ca = ("-CA", str(pki.ca_crt), "-CAkey", str(pki.ca_key))
    _certificate("/CN=workerpool-local-ca", pki.ca_key, pki.ca_crt)
    _certificate(
        "/CN=kube-apiserver",
        pki.serving_key,
        pki.serving_crt,
        *signed_by_ca,
        "-addext",
        "subjectAltName="
        + ",".join(
            [f"IP:{ip}" for ip in server_ips]
            + [
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
        ),
        "-addext",
        "extendedKeyUsage=serverAuth",
    )
    # system:masters: the admin identity for tests and the demo set-up.
    _certificate(
        "/O=system:masters/CN=workerpool-admin",
        pki.admin_key,
        pki.admin_crt,
        *signed_by_ca,
        "-addext",
        "extendedKeyUsage=clientAuth",
    )
    if node_name:
        # The Node authorizer and NodeRestriction know a kubelet by this name and group.
        _certificate(
            f"/O=system:nodes/CN=system:node:{node_name}",
            pki.node_key,
            pki.node_crt,
            *signed_by_ca,
            "-addext",
            "extendedKeyUsage=clientAuth",
        )
    # The API server's identity towards the kubelet (logs, exec).
    _certificate(
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        pki.kubelet_client_key,
        pki.kubelet_client_crt,
        *signed_by_ca,
        "-addext",
        "extendedKeyUsage=clientAuth",
    )
    _certificate("/CN=front-proxy-ca", pki.front_proxy_ca_key, pki.front_proxy_ca_crt)
    _certificate(
        f"/CN={FRONT_PROXY_CLIENT}",
        pki.front_proxy_key,
        pki.front_proxy_crt,
        "-CA",
        str(pki.front_proxy_ca_crt),
        "-CAkey",
        str(pki.front_proxy_ca_key),
        "-addext",
        "extendedKeyUsage=clientAuth",
    )
    _openssl("genrsa", "-out", str(pki.sa_key), "2048")
    _openssl("rsa", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki


def make_serving_tls(directory: Path, *, name: str, ips: tuple[str, ...], dns: tuple[str, ...]) -> RedisTls:
    """A CA of its own (`name`) and a certificate it signed, for both ends of a TLS
    connection (server and client auth), valid for `ips`, `dns`, loopback and localhost;
    the file names KEDA's certificate directory uses (ca.crt, tls.crt, tls.key)."""
    return _signed_tls(RedisTls(directory, stem="tls"), name, f"{name}-serving", ips, dns, "serverAuth,clientAuth")


class RedisTls:
    """A CA and a server certificate it signed (valid for `ips` and localhost)."""

    def __init__(self, directory: Path, stem: str = "redis") -> None:
        self.dir = directory
        ca = "ca" if stem == "tls" else f"{stem}-ca"
        self.ca, self.ca_key = directory / f"{ca}.crt", directory / f"{ca}.key"
        self.cert, self.key = directory / f"{stem}.crt", directory / f"{stem}.key"


def make_redis_tls(directory: Path, ips: tuple[str, ...], name: str = "workerpool-redis-ca") -> RedisTls:
    """The test bed's Redis TLS: its own CA (`name`) and a serving certificate for `ips`."""
    return _signed_tls(RedisTls(directory), name, "redis", ips, (), "serverAuth")


def _signed_tls(
    tls: RedisTls, ca_name: str, subject: str, ips: tuple[str, ...], dns: tuple[str, ...], usage: str
) -> RedisTls:
    tls.dir.mkdir(parents=True, exist_ok=True)
    _certificate(f"/CN={ca_name}", tls.ca_key, tls.ca)
    alt = [f"IP:{ip}" for ip in dict.fromkeys((*ips, "127.0.0.1"))] + [f"DNS:{d}" for d in (*dns, "localhost")]
    _certificate(
        f"/CN={subject}",
        tls.key,
        tls.cert,
        "-CA",
        str(tls.ca),
        "-CAkey",
        str(tls.ca_key),
        "-addext",
        "subjectAltName=" + ",".join(alt),
        "-addext",
        f"extendedKeyUsage={usage}",
    )
    for path in (tls.key, tls.ca_key):
        path.chmod(0o600)
    return tls
