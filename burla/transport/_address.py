"""Addresses: ``host:port`` text parsed in one place, and how deep listening
sockets queue connections (stdlib only: workers use it too)."""

from __future__ import annotations

import socket

from .._errors import ConfigError


def parse_address(text: str, what: str = "a head address") -> tuple[str, int]:
    """``"host:port"`` (IPv6 as ``"[::1]:7000"``) as ``(host, port)``; ConfigError naming ``what`` otherwise."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must look like HOST:PORT, got {text!r}")
    return host, int(port)


def listen_backlog() -> int:
    """The kernel's cap on a listen queue (net.core.somaxconn): a head that
    1,000 nodes register with at once must not drop their SYNs (issue 10)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(int(f.read()), socket.SOMAXCONN)
    except (OSError, ValueError):
        return socket.SOMAXCONN
