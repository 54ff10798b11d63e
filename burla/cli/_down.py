"""``burla down [NAME]``: stop a cluster started by ``burla up`` and forget it."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .. import _config
from .._errors import ProviderError
from ..cloud import ClusterRecord, get_provider, provider_types


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("down", help="stop a cluster started with `burla up` (default: the current one)")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=main)


async def _unrecorded(name: str) -> str | None:
    """The provider holding resources of cluster ``name`` that no record names
    (``burla up`` crashed before writing one)."""
    for kind in provider_types():
        try:
            if await get_provider(kind).exists(name):
                return kind
        except (ProviderError, ImportError):
            continue
    return None


def main(args: argparse.Namespace) -> int:
    record = _config.load_cluster(args.name)
    if record is None and args.name:
        kind = asyncio.run(_unrecorded(args.name))
        if kind is not None:
            record = ClusterRecord(name=args.name, provider=kind)
    if record is None:
        record = _config.load_for_command(args.name, "down")
    if record is None:
        return 1
    try:
        removed = asyncio.run(get_provider(record.provider).down(record.name, record))
    except (ProviderError, OSError) as e:
        print(f"burla down: {e}", file=sys.stderr)
        return 1
    _config.remove_cluster(record.name)
    print(f"cluster {record.name!r} is down ({removed} thing(s) removed)")
    return 0
