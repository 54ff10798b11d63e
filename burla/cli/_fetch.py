"""The CLI's reads of a head's JSON API."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable
from typing import Any

from .._config import ClusterRecord
from .._retry import retry_sync
from ..transport._tls import client_context


def fetch(record: ClusterRecord, route: str, timeout: float = 2.0) -> Any:
    req = urllib.request.Request(record.http + route, headers={"Authorization": f"Bearer {record.token}"})
    with urllib.request.urlopen(req, timeout=timeout, context=_https(record)) as resp:
        return json.loads(resp.read())


def _https(record: ClusterRecord) -> ssl.SSLContext | None:
    """The head's HTTPS, trusted through the cluster's CA alone.  The URL names an address and the
    certificate ``HEAD_NAME``, so the chain is what is checked: that CA signed one certificate only."""
    if not record.ca:
        return None
    ctx = client_context(record.ca)
    ctx.check_hostname = False  # (verify_mode stays CERT_REQUIRED)
    return ctx


def responds(record: ClusterRecord) -> bool:
    try:
        fetch(record, "/v1/cluster", 1.0)
        return True
    except (OSError, ValueError):
        return False


class _NotYet(Exception):
    pass


def wait_ready(record: ClusterRecord, nodes: int, timeout: float, check: Callable[[], None] = lambda: None) -> None:
    """Return once ``nodes`` nodes have registered with the head; TimeoutError after ``timeout``.
    ``check`` runs before each attempt (it may raise: an interruption)."""
    seen = 0

    def registered() -> None:
        nonlocal seen
        check()
        try:
            seen = len(fetch(record, "/v1/cluster", 1.0)["nodes"])
        except (OSError, ValueError) as e:
            raise _NotYet() from e
        if seen < nodes:
            raise _NotYet()

    try:
        retry_sync(registered, retry_on=(_NotYet,), deadline=timeout, base=0.05, cap=0.5)
    except _NotYet:
        raise TimeoutError(f"only {seen} of {nodes} node(s) registered within {timeout:g}s") from None
