"""Cluster-scale benchmarks: ``python -m benchmarks cluster [--nodes 10,100,1000] [--w7] [--quick]``.

S2  A real head (``burla head``) and a real client, with N simulated nodes x
    10 slots (``benchmarks.simnodes``: real protocol, "workers" in-process)
    from two processes.  Per N: registration time, the head's idle CPU and
    RSS per node, a 10,000-input print-only job, and 10,000 x 50 ms calls
    (with the share of nodes that were given work).
W7  A real ``burla up``-style local cluster of 4 nodes x 25 workers (on this
    machine's CPUs: the work sleeps): the busy fraction of its slots during a
    sleep-bound job, sum(call durations) / (slots x wall time).

Run each in its own processes; figures go to stdout as one JSON line each
(``RESULT {...}``) and to ``--out``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import psutil

from . import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_PROCESSES = 2
IDLE_SECONDS = 5.0


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _start_head() -> tuple[subprocess.Popen[str], str, str]:
    head = subprocess.Popen([sys.executable, "-m", "burla", "head", "--port", "0", "--http-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    ready = json.loads(head.stdout.readline())  # type: ignore[union-attr]
    return head, ready["head"], ready["token"]


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def s2(n_nodes: int, inputs: int, slots: int = 10, idle_seconds: float = IDLE_SECONDS) -> dict[str, Any]:
    import burla

    head, address, token = _start_head()
    sims: list[subprocess.Popen[str]] = []
    try:
        hp = psutil.Process(head.pid)
        time.sleep(1.0)  # the head loads its HTTP side after it is ready: not a per-node cost
        rss0, cpu0 = hp.memory_info().rss, _cpu(hp)
        time.sleep(idle_seconds)
        base_cpu = (_cpu(hp) - cpu0) / idle_seconds  # an empty head's own ticks
        t0 = time.perf_counter()
        per = -(-n_nodes // SIM_PROCESSES)
        for i in range(SIM_PROCESSES):
            count = min(per, n_nodes - i * per)
            if count > 0:
                sims.append(subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.simnodes", address, token, "--nodes", str(count),
                     "--slots", str(slots), "--prefix", f"s{i}-"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env()))
        for sim in sims:
            line = sim.stdout.readline()  # type: ignore[union-attr]
            assert line.startswith("REGISTERED"), f"a simulated node process failed: {line!r}"
        registration = time.perf_counter() - t0
        time.sleep(0.5)  # the last Welcome is out; let the head settle
        rss1, cpu0 = hp.memory_info().rss, _cpu(hp)
        time.sleep(idle_seconds)
        idle_cpu = (_cpu(hp) - cpu0) / idle_seconds - base_cpu
        burla.connect(address, token)
        burla.remote_parallel_map(tasks.shout, range(100), spinner=False)  # warm: function cache, sockets
        t = time.perf_counter()
        burla.remote_parallel_map(tasks.shout, range(inputs), spinner=False)
        print_only = time.perf_counter() - t
        t = time.perf_counter()
        where = burla.remote_parallel_map(tasks.hold, [0.05] * inputs, spinner=False)
        hold = time.perf_counter() - t
        burla.shutdown()
        return {
            "nodes": n_nodes, "slots": n_nodes * slots, "inputs": inputs,
            "registration_s": round(registration, 3),
            "idle_head_cpu_us_per_node_s": round(idle_cpu / n_nodes * 1e6, 2),
            "head_rss_kb_per_node": round((rss1 - rss0) / n_nodes / 1024, 1),
            "print_only_s": round(print_only, 3),
            "hold_50ms_s": round(hold, 3),
            "hold_ideal_s": round(0.05 * -(-inputs // (n_nodes * slots)), 3),
            "nodes_given_work": round(len(set(where)) / n_nodes, 3),
        }
    finally:
        for p in [*sims, head]:
            p.kill()
            p.wait()


def w7(calls: int, seconds: float = 1.0, nodes: int = 4, workers: int = 25) -> dict[str, Any]:
    import burla
    from burla.cloud import start_local_cluster

    cluster = start_local_cluster("w7", nodes=nodes, workers_per_node=workers)
    try:
        burla.connect(cluster.record.head, cluster.record.token)
        deadline = time.monotonic() + 120
        while _slots(cluster) < nodes * workers and time.monotonic() < deadline:
            time.sleep(0.2)  # a benchmark, not a test: poll until every node registered
        burla.remote_parallel_map(tasks.identity, range(nodes * workers), spinner=False)  # warm every worker
        slots = _slots(cluster)
        t = time.perf_counter()
        burla.remote_parallel_map(tasks.nap, [seconds] * calls, spinner=False)
        wall = time.perf_counter() - t
        burla.shutdown()
        busy = calls * seconds / (slots * wall)
        return {"nodes": nodes, "workers_per_node": workers, "slots": slots, "calls": calls, "call_s": seconds,
                "wall_s": round(wall, 3), "ideal_s": round(seconds * -(-calls // slots), 3),
                "busy_fraction": round(busy, 3)}
    finally:
        cluster.stop()


def _slots(cluster: Any) -> int:
    import urllib.request

    rec = cluster.record
    req = urllib.request.Request(f"{rec.http}/v1/cluster", headers={"Authorization": f"Bearer {rec.token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(json.load(r)["workers"])
    except OSError:  # the head is still loading its HTTP side while 100 workers start
        return 0


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks cluster")
    p.add_argument("--nodes", default="10,100,1000", help="S2 cluster sizes (comma-separated; empty: skip S2)")
    p.add_argument("--w7", action="store_true", help="also run W7 (a real 4 x 25 local cluster)")
    p.add_argument("--quick", action="store_true",
                   help="1,000 inputs instead of 10,000, 1 s idle samples; W7 with 200 calls")
    p.add_argument("--out", default=None)
    p.add_argument("--one", help=argparse.SUPPRESS)  # run one measure in this process
    args = p.parse_args(argv)
    if args.one:
        kind, _, n = args.one.partition(":")
        if kind == "S2":
            res = s2(int(n), 1000, idle_seconds=1.0) if args.quick else s2(int(n), 10_000)
        else:
            res = w7(200 if args.quick else 1000)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    report: dict[str, Any] = {"S2": [], "W7": None}
    runs = [f"S2:{n}" for n in args.nodes.split(",") if n] + (["W7:"] if args.w7 else [])
    for one in runs:
        cmd = [sys.executable, "-m", "benchmarks", "cluster", "--one", one] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=_env(), timeout=900)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        res = json.loads(lines[0][7:]) if lines else {"error": out.stderr.strip().splitlines()[-1:] or "no output"}
        print(one, json.dumps(res), flush=True)
        if one.startswith("S2"):
            report["S2"].append(res)
        else:
            report["W7"] = res
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0
