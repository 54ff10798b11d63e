"""``burla status [--json]``: the current cluster's head, nodes, workers and jobs,
and what its provider says exists (processes, containers, VMs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import msgspec

from .. import _config
from .._errors import ProviderError
from ..cloud import get_provider
from ._fetch import fetch


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show the current cluster")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ca", action="store_true", help="print the CA certificate of the head's TLS (PEM), for "
                   "burla.connect(..., ca=...) or BURLA_CA on another machine, or a browser")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    record = _config.load_any(args.name) or _config.load_for_command(args.name, "status")
    if record is None:
        return 1
    if args.ca:
        if not record.ca:
            print(f"burla status: cluster {record.name!r} is plaintext (a loopback or Docker head): it has no CA",
                  file=sys.stderr)
            return 1
        print(record.ca, end="")
        return 0
    answered = True
    try:
        if not record.http:
            raise OSError("`burla up` has not recorded its head yet (it is still creating the cluster, or died)")
        cluster = fetch(record, "/v1/cluster")
        jobs = fetch(record, "/v1/jobs")["jobs"]
    except (OSError, ValueError) as e:  # what exists (and bills) is still worth showing
        print(f"burla status: cluster {record.name!r} does not answer at {record.http or 'its head'}: {e}",
              file=sys.stderr)
        answered, cluster, jobs = False, {"nodes": [], "workers": 0, "jobs_running": 0}, []
    out: dict[str, Any] = {"name": record.name, "provider": record.provider, "head": record.head,
                           "http": record.http, "nodes": cluster["nodes"], "workers": cluster["workers"], "jobs": jobs}
    try:
        out["resources"] = msgspec.to_builtins(asyncio.run(get_provider(record.provider).status(record)))
    except ProviderError as e:
        out["resources_error"] = str(e)
    registered = {n["node_id"] for n in out["nodes"]}
    for r in out.get("resources", []):  # a node VM or container that exists but is not in the head's registry
        r["registered"] = r["role"] != "node" or r["name"] in registered
    if args.json:
        print(json.dumps(out, indent=2))
        return 0 if answered else 1
    print(f"cluster {out['name']!r}: head {out['head']}  API {out['http']}"
          + ("  (TLS: the cluster's CA, `burla status --ca`)" if record.ca else ""))
    print(f"  {len(out['nodes'])} node(s), {out['workers']} worker(s), {cluster['jobs_running']} job(s) running"
          + (f", queues in {cluster['queue']}" if cluster.get("queue", "memory") != "memory" else ""))
    for n in out["nodes"]:
        print(f"  node {n['node_id']}: {n['cpus']} CPUs, {n['workers']} workers, job {n['job_id'] or '-'}")
    now = time.time()
    for r in out.get("resources", []):
        where = f", {r['zone']}" if r["zone"] else ""
        extra = [f"up {_age(now - r['created'])}"] if r["created"] else []
        extra += [f"~${r['cost_per_hour']:.3f}/h"] if r["cost_per_hour"] else []
        extra += [] if r["registered"] else ["never registered with the head" if answered else "not registered"]
        print(f"  {record.provider} {r['role']} {r['name']}{where}: {r['state']}"
              + (f" ({', '.join(extra)})" if extra else ""))
    costs = sum(r["cost_per_hour"] for r in out.get("resources", []))
    if costs:
        print(f"  running VMs: ~${costs:.2f}/hour (list price; disks extra)")
    if "resources_error" in out:
        print(f"  ({record.provider}: {out['resources_error']})")
    return 0 if answered else 1


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
