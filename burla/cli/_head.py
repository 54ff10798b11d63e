"""``burla head``: run the head (main service) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket

from .. import _loop
from ..scheduler import Head


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("head", help="run the head (main service) of a cluster")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="TCP port for clients and nodes (0: any free port)")
    p.add_argument("--http-port", type=int, default=0, help="port of the JSON API (0: any free port)")
    p.add_argument("--name", default="burla")
    p.add_argument("--token", help="cluster token (default: $BURLA_TOKEN, else a new random one is printed)")
    p.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--http-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--reap-gce", metavar="FILE", help="GCE cluster: delete node VMs that stop heart-beating "
                   "(JSON: project, zones, api_endpoint, cluster, reap_after_s)")
    p.add_argument("--reap-gce-metadata", action="store_true", help=argparse.SUPPRESS)  # same JSON in $BURLA_GCE
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.pop("BURLA_TOKEN", None) or secrets.token_urlsafe(32)
    _loop.raise_fd_limit()
    return int(_loop.run(_serve(args, token)))


async def _serve(args: argparse.Namespace, token: str) -> int:
    watcher = None
    if args.reap_gce or args.reap_gce_metadata:
        from ..cloud.gce._reaper import Reaper

        text = _read(args.reap_gce) if args.reap_gce else os.environ.get("BURLA_GCE", "{}")
        watcher = Reaper(json.loads(text))
    head = Head(token, args.name, node_watcher=watcher)
    if args.listen_fd is not None:
        listen = socket.socket(fileno=args.listen_fd)
        http = socket.socket(fileno=args.http_fd) if args.http_fd is not None else None
        addr = await head.start_on(listen, http)
    else:
        addr = await head.start(args.host, args.port, args.http_port)
    ready = {"head": f"{addr.host}:{addr.port}", "http": f"http://{addr.host}:{addr.http_port}"}
    if not (args.token or args.listen_fd is not None):
        ready["token"] = token
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.lifeline_fd is not None:
        _loop.watch_lifeline(args.lifeline_fd, stop.set)
    await stop.wait()
    await head.stop()
    return 0


def _read(path: str) -> str:
    with open(path) as f:  # a small file, read once before the head serves
        return f.read()
