"""TEST INFRASTRUCTURE — a throwaway CA, serving cert, admin client cert and
service-account keys, made with the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path


class Pki:
    """The files of a throwaway PKI in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_crt, self.ca_key = directory / "ca.crt", directory / "ca.key"
        self.serving_crt, self.serving_key = directory / "apiserver.crt", directory / "apiserver.key"
        self.admin_crt, self.admin_key = directory / "admin.crt", directory / "admin.key"
        self.sa_key, self.sa_pub = directory / "sa.key", directory / "sa.pub"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(directory: Path) -> Pki:
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=workerpool-local-ca",
        "-keyout",
        str(pki.ca_key),
        "-out",
        str(pki.ca_crt),
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=kube-apiserver",
        "-CA",
        str(pki.ca_crt),
        "-CAkey",
        str(pki.ca_key),
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-keyout",
        str(pki.serving_key),
        "-out",
        str(pki.serving_crt),
    )
    # system:masters: the admin identity for tests and the demo set-up.
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/O=system:masters/CN=workerpool-admin",
        "-CA",
        str(pki.ca_crt),
        "-CAkey",
        str(pki.ca_key),
        "-addext",
        "extendedKeyUsage=clientAuth",
        "-keyout",
        str(pki.admin_key),
        "-out",
        str(pki.admin_crt),
    )
    _openssl("genrsa", "-out", str(pki.sa_key), "2048")
    _openssl("rsa", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    return pki
