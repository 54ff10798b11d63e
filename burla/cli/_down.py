"""``burla down [NAME]``: stop a cluster started by ``burla up`` and forget it."""

from __future__ import annotations

import argparse
import sys

from .. import _config
from .._errors import ProviderError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("down", help="stop a cluster started with `burla up` (default: the current one)")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    record = _config.load_cluster(args.name)
    if record is None and args.name and _docker_leftovers(args.name):
        record = {"name": args.name, "provider": "docker"}  # crashed before it was recorded
    if record is None:
        record = _config.load_for_command(args.name, "down")
    if record is None:
        return 1
    if record.get("provider") == "gce":
        import asyncio

        from ..cloud import stop_pids
        from ..cloud.gce import _provider as gce

        try:
            removed = asyncio.run(gce.down(record["name"], record["extra"]))
        except ProviderError as e:
            print(f"burla down: {e}", file=sys.stderr)
            return 1
        stop_pids(record.get("pids", []))
        print(f"deleted {removed} instance(s) and firewall rule(s) of cluster {record['name']!r}")
    elif record.get("provider") == "docker":
        from ..cloud.docker import _provider

        try:
            removed = _provider.down(record["name"])
        except ProviderError as e:
            print(f"burla down: {e}", file=sys.stderr)
            return 1
        print(f"removed {removed} Docker object(s) of cluster {record['name']!r}")
    else:
        from ..cloud import stop_pids

        stop_pids(record.get("pids", []))
    _config.remove_cluster(record["name"])
    print(f"cluster {record['name']!r} is down")
    return 0


def _docker_leftovers(name: str) -> bool:
    try:
        from ..cloud.docker import _provider

        return bool(_provider.status(name))
    except (ProviderError, ImportError):
        return False
