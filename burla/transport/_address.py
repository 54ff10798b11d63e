"""``host:port`` text, parsed in one place (stdlib only: workers use it too)."""

from __future__ import annotations

from .._errors import ConfigError


def parse_address(text: str, what: str = "a head address") -> tuple[str, int]:
    """``"host:port"`` (IPv6 as ``"[::1]:7000"``) as ``(host, port)``; ConfigError naming ``what`` otherwise."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must look like HOST:PORT, got {text!r}")
    return host, int(port)
