"""``burla jobs [NAME] [--json]``: the jobs the current cluster's head knows, with their state."""

from __future__ import annotations

import argparse
import json
import sys

from .. import _config
from ._fetch import fetch


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("jobs", help="list the cluster's jobs and their state")
    p.add_argument("name", nargs="?", help="the cluster (default: the current one)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    record = _config.load_any(args.name) or _config.load_for_command(args.name, "jobs")
    if record is None:
        return 1
    try:
        if not record.http:
            raise OSError("`burla up` has not recorded its head yet")
        jobs = fetch(record, "/v1/jobs")["jobs"]
    except (OSError, ValueError) as e:
        print(f"burla jobs: cluster {record.name!r} does not answer at {record.http or 'its head'}: {e}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    if not jobs:
        print(f"cluster {record.name!r}: no jobs")
        return 0
    print(f"{'JOB':<28} {'FUNCTION':<20} {'STATE':<10} {'DONE':>15} {'FAILED':>7} {'SECONDS':>9}")
    for j in jobs:
        total = "?" if j["total"] is None else str(j["total"])
        print(f"{j['job_id']:<28} {j['function'][:20]:<20} {j['state']:<10} {str(j['done']) + '/' + total:>15} "
              f"{j['failed']:>7} {j['duration_s']:>9.1f}"
              + (f"  detached, {j['results_waiting']} result(s) waiting" if j.get("detached") else "")
              + (f"  {j['error']['kind']}: {j['error']['message']}" if j.get("error") else ""))
    return 0
