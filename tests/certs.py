"""Certificates the TLS tests make: a CA, a server certificate for 127.0.0.1 and
localhost signed by it, and the wrong ones (another CA, another name)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Certs:
    ca: Path  # the CA that signed cert
    cert: Path  # the server's certificate chain, for 127.0.0.1 and localhost
    key: Path
    other_ca: Path  # a CA that signed nothing here
    other_name_cert: Path  # signed by ca, but for another name only
    other_name_key: Path
    other_key: Path  # a key that is not cert's

    def client_context(self, ca: Path | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=ca or self.ca)

    def server_flags(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    elsewhere = ca.issue_cert("jobmon.example")
    stranger = other_ca.issue_cert("127.0.0.1")
    certs = Certs(
        ca=directory / "ca.pem",
        cert=directory / "cert.pem",
        key=directory / "key.pem",
        other_ca=directory / "other-ca.pem",
        other_name_cert=directory / "other-name-cert.pem",
        other_name_key=directory / "other-name-key.pem",
        other_key=directory / "other-key.pem",
    )
    ca.cert_pem.write_to_path(str(certs.ca))
    other_ca.cert_pem.write_to_path(str(certs.other_ca))
    for issued, cert_path, key_path in (
        (server, certs.cert, certs.key),
        (elsewhere, certs.other_name_cert, certs.other_name_key),
    ):
        for n, pem in enumerate(issued.cert_chain_pems):
            pem.write_to_path(str(cert_path), append=n > 0)
        issued.private_key_pem.write_to_path(str(key_path))
    stranger.private_key_pem.write_to_path(str(certs.other_key))
    return certs
