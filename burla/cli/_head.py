"""``burla head``: run the head (main service) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import ssl
import sys

from .. import _loop
from .._errors import ConfigError, QueueUnavailable
from ..scheduler import Head, HeadConfig
from ..scheduler.backends import QueueBackend, backend_for
from ..transport._tls import server_context, server_context_from_files


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
    p.add_argument("--tls-cert", metavar="FILE", help="serve clients and nodes over TLS with this certificate "
                   "(PEM; a cloud cluster's, made by `burla up`; or its text in $BURLA_TLS_CERT)")
    p.add_argument("--queue", default="memory", metavar="URL",
                   help="where jobs' queues live: memory (in this process, the default) or redis://HOST:PORT/DB")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM; or $BURLA_TLS_KEY)")
    p.add_argument("--retention", type=float, default=HeadConfig.retention, metavar="SECONDS",
                   help="how long a detached job's results wait for a client after it ended (default: 1 day)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    given = args.token or os.environ.pop("BURLA_TOKEN", None)
    token = given or secrets.token_urlsafe(32)
    if bool(args.tls_cert) != bool(args.tls_key):
        print("burla head: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    tls = None
    env_cert, env_key = os.environ.pop("BURLA_TLS_CERT", ""), os.environ.pop("BURLA_TLS_KEY", "")
    if args.tls_cert or env_cert:
        try:
            tls = (server_context_from_files(args.tls_cert, args.tls_key) if args.tls_cert
                   else server_context(env_cert, env_key))
        except ConfigError as e:
            print(f"burla head: {e}", file=sys.stderr)
            return 2
    if not args.retention > 0:
        print(f"burla head: --retention must be a positive number of seconds, got {args.retention:g}",
              file=sys.stderr)
        return 2
    try:
        backend = backend_for(args.queue, args.name)
    except ConfigError as e:
        print(f"burla head: {e}", file=sys.stderr)
        return 2
    _loop.raise_fd_limit()
    return int(_loop.run(_serve(args, token, tls, backend, announce_token=not given)))


async def _serve(args: argparse.Namespace, token: str, tls: ssl.SSLContext | None, backend: QueueBackend,
                 announce_token: bool) -> int:
    watcher = None
    if args.reap_gce:
        from ..cloud.gce._reaper import Reaper

        watcher = Reaper(json.loads(_read(args.reap_gce)))
    head = Head(token, args.name, HeadConfig(retention=args.retention), node_watcher=watcher, tls=tls, backend=backend)
    try:
        if args.listen_fd is not None:
            listen = socket.socket(fileno=args.listen_fd)
            http = socket.socket(fileno=args.http_fd) if args.http_fd is not None else None
            addr = await head.start_on(listen, http)
        else:
            addr = await head.start(args.host, args.port, args.http_port)
    except QueueUnavailable as e:
        print(f"burla head: {e}", file=sys.stderr)
        return 2
    scheme = "https" if tls else "http"
    ready = {"head": f"{addr.host}:{addr.port}", "http": f"{scheme}://{addr.host}:{addr.http_port}"}
    if announce_token and args.listen_fd is None:  # one it made: never echo a given token into a log
        ready["token"] = token
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.lifeline_fd is not None:
        _loop.watch_lifeline(args.lifeline_fd, stop.set)
    if watcher is not None:
        watcher.start()
    await stop.wait()
    if watcher is not None:
        await watcher.stop()
    await head.stop()
    return 0


def _read(path: str) -> str:
    with open(path) as f:  # a small file, read once before the head serves
        return f.read()
