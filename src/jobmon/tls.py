"""TLS settings: the server's and the clients' SSL contexts, and their flags.

``jobmon serve --tls-cert FILE --tls-key FILE`` serves the TCP port and the
HTTP port over TLS only; ``--tls`` / ``--tls-ca FILE`` make a client (the
Python ``Client``, ``jobmon send``, ``jobmon run``) connect over TLS and verify
the server's certificate (the system's CAs, or that CA) and its name. TLS 1.2
is the oldest version either side speaks. A file that cannot be used is a
``ValueError`` that names the flag, the file and what is wrong with it.

How the server's handshakes are done (a timeout, one log line per failure) is
``tls_listen``'s; this module has no import heavier than ``ssl``, for the clients.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
from pathlib import Path

from . import envflags

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def _env(name: str) -> str:
    return os.environ.get("JOBMON_" + name, "")


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and a service has none.
    raise _EncryptedKey


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The context both listeners use; None when neither file is given."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise ValueError(
            f"{given} needs {missing} too (JOBMON_TLS_CERT and JOBMON_TLS_KEY): "
            "the certificate and its private key, as PEM files"
        )
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{flag} {path}: cannot read it: {exc.strerror}") from None
    try:  # a throwaway store, so a bad certificate is told apart from a bad key
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise ValueError(
            f"--tls-cert {cert}: no PEM certificate in it "
            "(expected -----BEGIN CERTIFICATE-----, the server's first, then any intermediates)"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKey:
        raise ValueError(
            f"--tls-key {key}: the key is encrypted with a passphrase; give it unencrypted "
            "(readable only by jobmon's user), e.g. openssl pkey -in KEY -out PLAIN_KEY"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"--tls-key {key} is not the private key of the certificate in --tls-cert {cert}"
            ) from None
        raise ValueError(
            f"--tls-key {key}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----): "
            f"{exc}"
        ) from None
    return context


def client_context(
    tls: bool | ssl.SSLContext | None = None, ca: str | os.PathLike[str] | None = None
) -> ssl.SSLContext | None:
    """What a client connects with: None for plain TCP.

    ``tls``: True verifies the server against the system's CAs; an SSLContext is
    used as it is; None (the Python API's default) reads JOBMON_TLS and
    JOBMON_TLS_CA as the command line does. ``ca`` (a PEM file of CA
    certificates) implies TLS and is trusted instead of the system's CAs.
    """
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is None and ca is None:
        tls = envflags.env_truth("TLS")
        ca = _env("TLS_CA") or None
    if not tls and ca is None:
        return None
    try:
        context = ssl.create_default_context(cafile=ca)
    except OSError as exc:  # ssl.SSLError is one too
        why = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else None
        raise ValueError(
            f"--tls-ca {ca}: "
            + (f"cannot read it: {why}" if why else "no PEM CA certificate in it")
        ) from None
    context.minimum_version = MINIMUM_VERSION
    return context


def connect(host: str, port: int, context: ssl.SSLContext | None, timeout: float) -> socket.socket:
    """A blocking connection (``jobmon send``), the handshake done when one is asked for."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if context is None:
        return sock
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def _ca_file(text: str) -> str:
    try:
        client_context(True, text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--tls-ca ")) from None
    return text


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    for flag, text in (
        ("--tls-cert", "serve TCP and HTTP over TLS only: this PEM certificate (chain)"),
        ("--tls-key", "the certificate's private key (PEM, unencrypted)"),
    ):
        envflags.add(parser, flag, type=Path, metavar="FILE", help=text)


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    envflags.add(
        parser,
        "--tls",
        action="store_true",
        help="connect over TLS, verifying the server's certificate and name (system CAs)",
    )
    envflags.add(
        parser,
        "--tls-ca",
        type=_ca_file,
        metavar="FILE",
        help="trust this CA (PEM) for the server's certificate instead; implies --tls",
    )
