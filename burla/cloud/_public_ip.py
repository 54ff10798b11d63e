"""This machine's public address, as a cloud head's firewall sees a client coming from it.

Asked of a "what is my IP" service (plain text answers), over HTTPS, the
first that answers within ``TIMEOUT``; ``BURLA_PUBLIC_IP_URL`` replaces the
list (a corporate egress, or a test).  None when none answers: the caller
then asks the user for ``head.allow_from``.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.request

SERVICES = ("https://checkip.amazonaws.com", "https://api.ipify.org", "https://ifconfig.me/ip")
TIMEOUT = 3.0


def public_address(timeout: float = TIMEOUT) -> str | None:
    urls = [os.environ["BURLA_PUBLIC_IP_URL"]] if os.environ.get("BURLA_PUBLIC_IP_URL") else SERVICES
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                text = resp.read(64).decode("ascii", "replace").strip()
            return str(ipaddress.ip_address(text))
        except (OSError, ValueError):
            continue
    return None


def as_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"
