"""``burla down [NAME]``: stop a cluster started by ``burla up`` and forget it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from .. import _config
from .._errors import ConfigError, ProviderError
from ..cloud import ClusterRecord, get_provider, load_spec, provider_types
from ..cloud._spec import provider_type


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("down", help="stop a cluster started with `burla up` (default: the current one)")
    p.add_argument("name", nargs="?", help="the cluster's name, or its cluster.yaml (found by label even when "
                                          "`burla up` died before recording it)")
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


def _from_spec(path: str) -> ClusterRecord:
    """``burla down cluster.yaml``: what the spec names, where its provider looks for it."""
    spec = load_spec(Path(path).read_text(), path)
    return _config.load_cluster(spec.name) or get_provider(provider_type(spec)).placeholder(spec)


def main(args: argparse.Namespace) -> int:
    if args.name and args.name.endswith((".yaml", ".yml")) and os.path.isfile(args.name):
        try:
            record: ClusterRecord | None = _from_spec(args.name)
        except ConfigError as e:
            print(f"burla down: {e}", file=sys.stderr)
            return 2
    else:
        record = _config.load_any(args.name)
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
