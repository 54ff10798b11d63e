"""Which cluster a call runs on, and the embedded default.

Order: ``burla.connect(address, token=..., ca=...)``, else ``BURLA_HEAD`` /
``BURLA_TOKEN`` (/ ``BURLA_CA``), else the cluster recorded by the last ``burla up``, else
the embedded cluster: a head and one local node with one worker per CPU,
started on first use as children of this process, reused for the rest of it,
and stopped at exit (they also die on their own if this process is killed).
"""

from __future__ import annotations

import atexit
import os
import threading

from .. import _config, _nested
from .._errors import AuthenticationError, ClusterUnreachable, ConfigError
from ..transport._address import parse_address
from ..transport._tls import read_ca
from ._session import Session

_lock = threading.Lock()
_explicit: tuple[str, str, str] | None = None
_session: Session | None = None
_embedded = None  # LocalCluster


def connect(address: str, token: str, ca: str | None = None) -> None:
    """Use the cluster whose head listens at ``address`` ("host:port") from now on.

    ``ca``: the head speaks TLS (a cloud cluster's does), and its certificate is
    this CA's: the CA's PEM text or a file holding it (``burla status --ca``)."""
    global _explicit, _session
    parse_address(address)
    if not token:
        raise ConfigError("burla.connect needs the cluster token (see `burla status` or the BURLA_TOKEN you set)")
    pem = read_ca(ca, "burla.connect(ca=...)") if ca else ""
    with _lock:
        _explicit = (address, token, pem)
        if _session is not None and (_session.address, _session.ca) != (address, pem):
            _session.close()
            _session = None


def _resolve() -> tuple[str, str, str, str] | None:
    """(address, token, CA or "", where the address came from: for error messages)."""
    if _explicit is not None:
        return (*_explicit, "given to burla.connect()")
    if _nested.cluster is not None:  # inside a worker: a nested call runs on the worker's own cluster
        return (*_nested.cluster, "the cluster this worker belongs to")
    env_head = os.environ.get("BURLA_HEAD")
    if env_head:
        token = os.environ.get("BURLA_TOKEN")
        if not token:
            raise ConfigError("BURLA_HEAD is set but BURLA_TOKEN is not: set both, or call burla.connect()")
        env_ca = os.environ.get("BURLA_CA")
        return env_head, token, read_ca(env_ca, "BURLA_CA") if env_ca else "", "taken from BURLA_HEAD"
    record = _config.load_cluster()
    if record is not None:
        return (record.head, record.token, record.ca,
                f"recorded by `burla up` for cluster {record.name!r}; if that cluster "
                f"is gone, `burla down {record.name}` forgets it")
    return None


def _open(address: str, token: str, ca: str, source: str) -> Session:
    host, port = parse_address(address)
    try:
        return Session(host, port, token, ca=ca)
    except (ClusterUnreachable, AuthenticationError) as e:  # (ConnectionLost too: a head that stopped answering)
        raise type(e)(f"{e} (the address {address} was {source})") from None


def session() -> Session:
    """The session for the current cluster (connecting, or starting the embedded one)."""
    global _session, _embedded
    with _lock:
        if _session is not None and _session.dead is None:
            return _session
        if _session is not None:
            _session.close()
            _session = None
        target = _resolve()
        if target is None:
            if _embedded is None:
                from ..cloud import start_local_cluster

                _embedded = start_local_cluster(name="embedded", attached=True)
                atexit.register(shutdown)
            target = (_embedded.record.head, _embedded.record.token, "", "the embedded cluster's")
        _session = _open(*target)
        return _session


def is_embedded(session: Session) -> bool:
    """Is ``session`` the embedded cluster's (which dies with this process)?"""
    return _embedded is not None and session.address == _embedded.record.head


def shutdown() -> None:
    """Close the session and stop the embedded cluster, if any."""
    global _session, _embedded
    with _lock:
        if _session is not None:
            _session.close()
            _session = None
        if _embedded is not None:
            _embedded.stop()
            _embedded = None
