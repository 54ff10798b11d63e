"""``burla node``: run a node daemon in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from .. import _loop
from .._errors import AuthenticationError, ClusterUnreachable, ConfigError, ProviderError
from ..cloud._recipes import NODE_EXIT_HEAD_GONE
from ..runtime._launch import Launcher
from ..runtime._node import NodeConfig, NodeDaemon
from ..transport._address import parse_address
from ..transport._tls import read_ca


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run a node daemon that joins a head")
    p.add_argument("--head", required=True, help="HOST:PORT of the head")
    p.add_argument("--token", help="cluster token (default: $BURLA_TOKEN)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    p.add_argument("--node-id", default=None)
    p.add_argument("--reconnect-for", type=float, default=0.0,
                   help="seconds to keep retrying when the head is lost (default 0: exit)")
    p.add_argument("--idle-shutdown", type=float, default=0.0,
                   help="exit after this many seconds without a job (default 0: never)")
    p.add_argument("--worker-runtime", choices=("process", "container"), default="process")
    p.add_argument("--worker-image", default=None, help="container runtime: default worker image")
    p.add_argument("--worker-network", default=None, help="container runtime: Docker network of the cluster")
    p.add_argument("--worker-listen", default="0.0.0.0:7100", help="container runtime: where workers connect")
    p.add_argument("--advertise", default=None, help="container runtime: HOST:PORT workers use to reach us")
    p.add_argument("--status-dir", default=None, help="directory for workers' status files")
    p.add_argument("--status-volume", default=None, help="container runtime: Docker volume mounted at --status-dir")
    p.add_argument("--environments", default=None, metavar="DIR",
                   help="process runtime: install each job's missing distributions under DIR (Compute Engine nodes)")
    p.add_argument("--packages-from", choices=("index", "client"), default="index",
                   help="where a job's missing distributions come from: the package index (default), or only "
                        "wheels the client ships (nodes that cannot reach an index)")
    p.add_argument("--tls-ca", default=None, metavar="FILE",
                   help="the head speaks TLS: trust this CA certificate (PEM) for it, and only it "
                        "(or the certificate's text in $BURLA_TLS_CA)")
    p.add_argument("--provider", default="local", help=argparse.SUPPRESS)
    p.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    token = args.token or os.environ.pop("BURLA_TOKEN", None)
    if not token:
        print("burla node: no token: pass --token or set BURLA_TOKEN", file=sys.stderr)
        return 2
    try:
        host, port = parse_address(args.head, "--head")
        listen = parse_address(args.worker_listen, "--worker-listen")
    except ConfigError as e:
        print(f"burla node: {e}", file=sys.stderr)
        return 2
    if args.worker_runtime == "container" and not (args.worker_image and args.worker_network and args.advertise
                                                   and args.status_dir and args.status_volume):
        print("burla node: --worker-runtime container needs --worker-image, --worker-network, --advertise, "
              "--status-dir and --status-volume", file=sys.stderr)
        return 2
    try:
        env_ca = os.environ.pop("BURLA_TLS_CA", "")
        ca = read_ca(args.tls_ca, "--tls-ca") if args.tls_ca else read_ca(env_ca, "$BURLA_TLS_CA") if env_ca else ""
    except ConfigError as e:
        print(f"burla node: {e}", file=sys.stderr)
        return 2
    _loop.raise_fd_limit()
    try:
        return int(_loop.run(_serve(args, host, port, listen, token, ca)))
    except ClusterUnreachable as e:  # past --reconnect-for: this node is done (a VM powers off on it)
        print(f"burla node: {e}", file=sys.stderr)
        return NODE_EXIT_HEAD_GONE  # (not 1, a crash: a supervisor need not restart it)
    except (ProviderError, AuthenticationError) as e:
        print(f"burla node: {e}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace, host: str, port: int, worker_listen: tuple[str, int], token: str,
                 ca: str) -> int:
    config = NodeConfig(args.workers, args.node_id, args.provider, args.reconnect_for, args.status_dir,
                        args.idle_shutdown, args.environments, args.packages_from == "client", ca)
    launcher: Launcher | None = None
    listen: tuple[str, int] | None = None
    if args.worker_runtime == "container":
        import psutil

        from ..cloud.docker._launcher import ContainerLauncher

        listen = worker_listen
        node_id = args.node_id or "node"
        launcher = ContainerLauncher(token, args.advertise, args.worker_network, args.worker_image,
                                     args.status_volume, args.status_dir,
                                     {"burla.cluster": os.environ.get("BURLA_CLUSTER", ""), "burla.node": node_id},
                                     node_id, psutil.virtual_memory().total, args.packages_from == "client")
    node = NodeDaemon(host, port, token, config, launcher, listen)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    if args.lifeline_fd is not None:
        _loop.watch_lifeline(args.lifeline_fd, node.stop)
    await node.run()
    return 0
