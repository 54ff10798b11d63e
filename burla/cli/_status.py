"""``burla status [--json]``: the current cluster's head, nodes, workers and jobs."""

from __future__ import annotations

import argparse
import json
import sys

from .. import _config
from ._up import fetch


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
        print(f"burla status: cluster {record['name']!r} does not answer at {record['http']}: {e}", file=sys.stderr)
        return 1
    out = {"name": record["name"], "provider": record.get("provider", "local"), "head": record["head"],
           "http": record["http"], "nodes": cluster["nodes"], "workers": cluster["workers"], "jobs": jobs}
    if out["provider"] == "gce":
        import asyncio

        from .._errors import ProviderError
        from ..cloud.gce import _provider as gce

        try:
            out["instances"] = asyncio.run(gce.status(record["name"], record["extra"]))
        except ProviderError as e:
            out["instances_error"] = str(e)
    if out["provider"] == "docker":
        from .._errors import ProviderError
        from ..cloud.docker import _provider

        try:
            out["containers"] = _provider.status(record["name"])
        except ProviderError as e:
            out["containers_error"] = str(e)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"cluster {out['name']!r}: head {out['head']}  API {out['http']}")
    print(f"  {len(out['nodes'])} node(s), {out['workers']} worker(s), {cluster['jobs_running']} job(s) running")
    for n in out["nodes"]:
        print(f"  node {n['node_id']}: {n['cpus']} CPUs, {n['workers']} workers, job {n['job_id'] or '-'}")
    for inst in out.get("instances", []):
        print(f"  instance {inst['name']} ({inst['role']}, {inst['zone']}): {inst['state']}")
    for cont in out.get("containers", []):
        print(f"  container {cont['name']} ({cont['role']}): {cont['state']}")
    return 0
