"""python -m benchmarks run [--engines ...] [--workloads ...] [--quick] [--out results.json]
python -m benchmarks plot results.json
python -m benchmarks cluster [--nodes 10,100,1000] [--w7] [--quick] [--out cluster.json]"""

from __future__ import annotations

import argparse
import json
import sys

from .run import ALL_ENGINES, ALL_WORKLOADS, run, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the workloads on each engine")
    r.add_argument("--engines", default=",".join(ALL_ENGINES))
    r.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    r.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    r.add_argument("--timeout", type=float, default=900, help="seconds per engine child")
    r.add_argument("--out", default=None, help="write the JSON report here")
    pl = sub.add_parser("plot", help="draw one PNG per workload from a JSON report")
    pl.add_argument("report")
    pl.add_argument("--out-dir", default=None)
    sub.add_parser("cluster", help="S2 (simulated nodes) and W7 (4 x 25 local cluster): see benchmarks/cluster.py",
                   add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cluster"]:
        from .cluster import main as cluster_main

        return cluster_main(argv[1:])
    args = p.parse_args(argv)
    if args.cmd == "plot":
        from .plot import plot

        for png in plot(args.report, args.out_dir):
            print(png)
        return 0
    engines = [e for e in args.engines.split(",") if e]
    workloads = [w for w in args.workloads.split(",") if w]
    bad = [e for e in engines if e not in ALL_ENGINES] + [w for w in workloads if w not in ALL_WORKLOADS]
    if bad:
        p.error(f"unknown engine/workload {bad[0]!r}; engines: {ALL_ENGINES}, workloads: {ALL_WORKLOADS}")
    report = run(engines, workloads, args.quick, args.timeout)
    print(table(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
