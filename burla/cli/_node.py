"""``burla node``: run a node daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from .. import _loop
from .._errors import ClusterUnreachable
from ..runtime._node import NodeDaemon


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("node", help="run a node daemon that joins a head")
    p.add_argument("--head", required=True, help="HOST:PORT of the head")
    p.add_argument("--token", help="cluster token (default: $BURLA_TOKEN)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    p.add_argument("--node-id", default=None)
    p.add_argument("--provider", default="local", help=argparse.SUPPRESS)
    p.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.pop("BURLA_TOKEN", None)
    if not token:
        print("burla node: no token: pass --token or set BURLA_TOKEN", file=sys.stderr)
        return 2
    host, _, port = args.head.rpartition(":")
    if not host or not port.isdigit():
        print(f"burla node: --head must be HOST:PORT, got {args.head!r}", file=sys.stderr)
        return 2
    try:
        return _loop.run(_serve(args, host, int(port), token))
    except ClusterUnreachable as e:
        print(f"burla node: {e}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace, host: str, port: int, token: str) -> int:
    node = NodeDaemon(host, port, token, args.workers, args.node_id, provider=args.provider)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    if args.lifeline_fd is not None:
        _loop.watch_lifeline(args.lifeline_fd, node.stop)
    await node.run()
    return 0
