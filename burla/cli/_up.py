"""``burla up [cluster.yaml]``: start a cluster and record it for later calls."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from typing import Any, Callable

from .. import _config
from .._errors import ConfigError, ProviderError
from ._spec import ClusterSpec


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="start a cluster (default: a local one) and make it the current cluster")
    p.add_argument("spec", nargs="?", help="cluster.yaml (name, provider: {type: local}, nodes, workers_per_node)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for every node to register (default 30, 600 for gce)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        spec = ClusterSpec()
        if args.spec:
            path = Path(args.spec)
            if not path.is_file():
                raise ConfigError(f"{args.spec}: no such file")
            spec = ClusterSpec.from_yaml_text(path.read_text(), args.spec)
    except ConfigError as e:
        print(f"burla up: {e}", file=sys.stderr)
        return 2
    existing = _config.load_cluster(spec.name)
    if existing is not None and _responds(existing):
        print(f"burla up: cluster {spec.name!r} is already running at {existing['head']} (burla down {spec.name} first)", file=sys.stderr)
        return 1
    try:
        record, log_hint, undo = _start(spec)
    except ProviderError as e:
        print(f"burla up: {e}", file=sys.stderr)
        return 1
    timeout = args.timeout or (600.0 if record.get("provider") == "gce" else 30.0)
    try:
        _wait_ready(record, spec.nodes, timeout)
    except TimeoutError as e:
        undo()
        print(f"burla up: {e}; {log_hint}", file=sys.stderr)
        return 1
    path = _config.save_cluster(record)
    print(f"cluster {spec.name!r} is up: head {record['head']}, API {record['http']}, {spec.nodes} node(s)")
    print(f"dashboard: {record['http']}/  (log in with `burla dashboard`, which prints a link carrying the token)")
    print(f"recorded in {path}; remote_parallel_map now runs there. Stop it with: burla down {spec.name}")
    return 0


def _start(spec: Any) -> tuple[dict, str, Callable[[], object]]:  # type: ignore[type-arg]
    from ..cloud import start_local_cluster, stop_pids
    from ..cloud.gce._spec import GceSpec

    if isinstance(spec, GceSpec):
        import asyncio

        from ..cloud.gce import _provider as gce

        cfg = _config.config_dir()
        cfg.mkdir(parents=True, exist_ok=True)
        record = asyncio.run(gce.up(spec, str(cfg))).to_json()

        def undo() -> None:
            asyncio.run(gce.down(spec.name, record["extra"]))
            stop_pids(record["pids"])

        return record, f"see the VMs' serial consoles, or {cfg}/{spec.name}.head.log", undo
    if spec.provider == "docker":
        from ..cloud.docker import _provider

        record = _provider.up(spec.name, spec.nodes, spec.workers_per_node, spec.image, spec.worker_runtime)
        return record.to_json(), f"see `docker logs burla-{spec.name}-head`", lambda: _provider.down(spec.name)

    log_dir = _config.config_dir() / "logs" / spec.name
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = start_local_cluster(spec.name, spec.nodes, spec.workers_per_node, attached=False, log_dir=str(log_dir))
    record = cluster.record.to_json()
    return record, f"logs in {log_dir}", lambda: stop_pids(record["pids"])  # type: ignore[arg-type]


def fetch(record: dict, route: str, timeout: float = 2.0) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(record["http"] + route, headers={"Authorization": f"Bearer {record['token']}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _responds(record: dict) -> bool:  # type: ignore[type-arg]
    try:
        fetch(record, "/v1/cluster", 1.0)
        return True
    except (OSError, ValueError):
        return False


def _wait_ready(record: dict, nodes: int, timeout: float) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            seen = len(fetch(record, "/v1/cluster", 1.0)["nodes"])
            if seen >= nodes:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"only {seen} of {nodes} node(s) registered within {timeout:g}s")
