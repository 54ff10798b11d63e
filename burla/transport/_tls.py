"""TLS for connections that can leave a private network (a cloud cluster's head).

Each such cluster has a CA of its own, made by ``burla up`` (``cloud/_pki.py``)
and kept (its certificate only) with the cluster's record.  The head's
certificate names ``HEAD_NAME``, whatever address it ends up on, so it can be
issued before its VM exists; a client trusts that CA alone, for that name
alone.  TLS carries the same frames as plaintext, and the token handshake
still runs inside it: TLS proves the head to the client and hides the
pickles, the token proves the client to the head.

Loopback clusters (embedded, ``burla up`` local, Docker) stay plaintext.
"""

from __future__ import annotations

import os
import ssl

from .._errors import ConfigError

HEAD_NAME = "burla-head"  # the DNS name in every head certificate, checked by clients
_BEGIN = "-----BEGIN CERTIFICATE-----"


def read_ca(ca: str, where: str = "the cluster's CA") -> str:
    """``ca`` as PEM text: given as PEM, or as the path of a PEM file."""
    text = ca
    if _BEGIN not in ca:
        path = os.path.expanduser(ca)
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {ca!r} ({e.strerror}): give the CA certificate's PEM text "
                              "or the path of a file holding it (`burla status --ca` prints it)") from None
    if _BEGIN not in text:
        raise ConfigError(f"{where} is not a PEM certificate: give the text starting with {_BEGIN} "
                          "(`burla status --ca` prints it) or the path of a file holding it")
    return text


def client_context(ca_pem: str) -> ssl.SSLContext:
    """Trust ``ca_pem`` alone, and only for ``HEAD_NAME``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cadata=ca_pem)
    except ssl.SSLError as e:
        raise ConfigError(f"the cluster's CA certificate is not valid PEM ({e.reason}): copy it again from "
                          "`burla status --ca`") from None
    return ctx


def server_context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """The head's side: its certificate and key (PEM text, kept only in memory and 0600 files)."""
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only; a private temporary file, removed at once
    with tempfile.NamedTemporaryFile("w", prefix="burla-head-", suffix=".pem") as f:
        os.chmod(f.name, 0o600)
        f.write(cert_pem + "\n" + key_pem)
        f.flush()
        try:
            ctx.load_cert_chain(f.name)
        except ssl.SSLError as e:
            raise ConfigError(f"the head's TLS certificate or key is not valid ({e.reason}): `burla down` and "
                              "`burla up` the cluster again to issue a new one") from None
    return ctx


def server_context_from_files(cert: str, key: str) -> ssl.SSLContext:
    try:
        with open(cert) as c, open(key) as k:
            return server_context(c.read(), k.read())
    except OSError as e:
        raise ConfigError(f"cannot read the head's TLS files ({e.filename}: {e.strerror})") from None
