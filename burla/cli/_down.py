"""``burla down [NAME]``: stop a cluster started by ``burla up`` and forget it."""

from __future__ import annotations

import argparse
import sys

from .. import _config


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("down", help="stop a cluster started with `burla up` (default: the current one)")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    record = _config.load_cluster(args.name)
    if record is None:
        which = f"named {args.name!r}" if args.name else "recorded"
        print(f"burla down: no cluster {which} (see `burla status`)", file=sys.stderr)
        return 1
    from ..cloud import stop_pids

    stop_pids(record.get("pids", []))
    _config.remove_cluster(record["name"])
    print(f"cluster {record['name']!r} is down")
    return 0
