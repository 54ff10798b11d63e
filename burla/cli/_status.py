"""``burla status [--json]``: the current cluster's head, nodes, workers and jobs,
and what its provider says exists (processes, containers, VMs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
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
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    record = _config.load_for_command(args.name, "status")
    if record is None:
        return 1
    try:
        cluster = fetch(record, "/v1/cluster")
        jobs = fetch(record, "/v1/jobs")["jobs"]
    except (OSError, ValueError) as e:
        print(f"burla status: cluster {record.name!r} does not answer at {record.http}: {e}", file=sys.stderr)
        return 1
    out: dict[str, Any] = {"name": record.name, "provider": record.provider, "head": record.head,
                           "http": record.http, "nodes": cluster["nodes"], "workers": cluster["workers"], "jobs": jobs}
    try:
        out["resources"] = msgspec.to_builtins(asyncio.run(get_provider(record.provider).status(record)))
    except ProviderError as e:
        out["resources_error"] = str(e)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"cluster {out['name']!r}: head {out['head']}  API {out['http']}")
    print(f"  {len(out['nodes'])} node(s), {out['workers']} worker(s), {cluster['jobs_running']} job(s) running")
    for n in out["nodes"]:
        print(f"  node {n['node_id']}: {n['cpus']} CPUs, {n['workers']} workers, job {n['job_id'] or '-'}")
    for r in out.get("resources", []):
        where = f", {r['zone']}" if r["zone"] else ""
        print(f"  {record.provider} {r['role']} {r['name']}{where}: {r['state']}")
    if "resources_error" in out:
        print(f"  ({record.provider}: {out['resources_error']})")
    return 0
