"""Runs the workloads for one engine in this process; prints one JSON line.

    python -m benchmarks.child --engine burla --workloads W1,W2 [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from . import tasks
from .engines import ENGINES, Burla, Engine

SIZES = {  # full, quick
    "W1": (20_000, 5_000),
    "W2": (50, 20),
    "W3": (200, 40),
    "W4": (40, 16),
    "M1": ((1_000_000, 10_000_000), (100_000, 400_000)),
    "W6": ((40, 1.0), (8, 0.25)),  # calls, seconds each
    "W8": ((200, 5_000), (50, 1_000)),  # round trips, calls in the burst
}


def _stats(values: list[float], unit: str, better: str) -> dict[str, Any]:
    return {"value": statistics.median(values), "min": min(values), "max": max(values), "runs": values,
            "unit": unit, "better": better}


def _reps(fn: Callable[[], float], reps: int) -> list[float]:
    return [fn() for _ in range(reps)]


def w1(engine: Engine, quick: bool, reps: int) -> dict[str, Any]:
    n = SIZES["W1"][quick]
    items = list(range(n))

    def once() -> float:
        t0 = time.perf_counter()
        out = engine.map(tasks.identity, items)
        dt = time.perf_counter() - t0
        assert list(out) == items, "W1 results differ"
        return n / dt

    return _stats(_reps(once, reps), "calls/s", "higher")


def w2(engine: Engine, quick: bool, reps: int) -> dict[str, Any]:
    lat = []
    for i in range(SIZES["W2"][quick]):
        t0 = time.perf_counter()
        got = engine.one(tasks.identity, i)
        lat.append((time.perf_counter() - t0) * 1e3)
        assert got == i, "W2 result differs"
    lat.sort()
    out = _stats(lat, "ms", "lower")
    out["p10"], out["p90"] = lat[len(lat) // 10], lat[len(lat) * 9 // 10]
    del out["runs"]
    return out


def w3(engine: Engine, quick: bool, reps: int) -> dict[str, Any]:
    n = SIZES["W3"][quick]
    blobs = [os.urandom(1 << 20) for _ in range(n)]

    def once() -> float:
        t0 = time.perf_counter()
        out = engine.map(tasks.identity, blobs)
        dt = time.perf_counter() - t0
        assert list(out) == blobs, "W3 results differ"
        del out
        return n * (1 << 20) / 1e6 / dt

    return _stats(_reps(once, reps), "MB/s", "higher")


def w4(engine: Engine, quick: bool, reps: int, n_iter: int, serial_per_task: float) -> dict[str, Any]:
    n = SIZES["W4"][quick]
    expected = tasks.spin(n_iter)

    def once() -> float:
        t0 = time.perf_counter()
        out = engine.map(tasks.spin, [n_iter] * n)
        wall = time.perf_counter() - t0
        assert list(out) == [expected] * n, "W4 results differ"
        return serial_per_task * n / (engine.ncpu * wall)

    return _stats(_reps(once, reps), "efficiency", "higher")


def w6(engine: Engine, quick: bool) -> dict[str, Any]:
    """Slow calls as a stream: how soon the first result arrives and the
    largest gap between results, in units of one call's duration."""
    n, seconds = SIZES["W6"][quick]
    t0 = time.perf_counter()
    arrivals = [time.perf_counter() - t0 for _ in engine.imap(tasks.nap, [seconds] * n)]
    assert len(arrivals) == n, "W6 lost results"
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return {"value": arrivals[0], "unit": "s", "better": "lower", "call_s": seconds, "calls": n,
            "first_calls": arrivals[0] / seconds, "max_gap_calls": max(gaps, default=0.0) / seconds,
            "total_s": arrivals[-1]}


def w8(engine: Engine, quick: bool, reps: int) -> dict[str, Any]:
    """An Executor: one tiny call submitted and awaited at a time (median round trip),
    the time ``submit`` itself takes, and a burst of tiny calls submitted then awaited."""
    ex = engine.executor()
    trips, burst = SIZES["W8"][quick]
    for i in range(20):  # warm: the executor's workers are up
        assert ex.submit(tasks.identity, i).result() == i
    rt, sub = [], []
    for i in range(trips):
        t0 = time.perf_counter()
        fut = ex.submit(tasks.identity, i)
        t1 = time.perf_counter()
        assert fut.result() == i, "W8 result differs"
        rt.append((time.perf_counter() - t0) * 1e3)
        sub.append((t1 - t0) * 1e6)

    def once() -> float:
        t0 = time.perf_counter()
        fs = [ex.submit(tasks.identity, i) for i in range(burst)]
        assert [f.result() for f in fs] == list(range(burst)), "W8 burst results differ"
        return burst / (time.perf_counter() - t0)

    rates = _reps(once, reps)
    rt.sort()
    return {"value": statistics.median(rt), "p10": rt[len(rt) // 10], "p90": rt[len(rt) * 9 // 10], "unit": "ms",
            "better": "lower", "submit_us": statistics.median(sub), "burst_calls_per_s": statistics.median(rates),
            "burst_runs": rates}


def m1(engine: Engine, quick: bool) -> dict[str, Any]:
    pids = [os.getpid(), *engine.service_pids()]
    procs = [psutil.Process(p) for p in pids]
    out: dict[str, Any] = {"unit": "MB", "better": "lower", "by_n": {}}
    for n in SIZES["M1"][quick]:
        peak = [0]
        stop = threading.Event()

        def sample(stop: threading.Event = stop, peak: list[int] = peak) -> None:
            while not stop.wait(0.05):
                try:
                    peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs))
                except psutil.Error:
                    pass

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        t0 = time.perf_counter()
        count = total = 0
        for r in engine.imap(tasks.identity, (i for i in range(n))):
            count += 1
            total += r
        dt = time.perf_counter() - t0
        stop.set()
        t.join()
        assert count == n and total == n * (n - 1) // 2, "M1 results differ"
        out["by_n"][str(n)] = {"peak_mb": peak[0] / 1e6, "seconds": dt}
    out["value"] = max(v["peak_mb"] for v in out["by_n"].values())
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--engine", required=True, choices=sorted(ENGINES))
    p.add_argument("--workloads", default="W1,W2,W3,W4")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--ncpu", type=int, default=os.cpu_count() or 2)
    p.add_argument("--queue", default="", help="burla: a local cluster whose head keeps queues there "
                   "(memory or redis://HOST:PORT/DB) instead of the embedded cluster")
    args = p.parse_args()
    workloads = args.workloads.split(",")
    reps = 1 if args.quick else 3
    n_iter = serial = 0.0
    if "W4" in workloads:  # serial time, measured before any engine runs
        n_iter = tasks.calibrate_spin(0.05)
        t0 = time.perf_counter()
        for _ in range(3):
            tasks.spin(n_iter)
        serial = (time.perf_counter() - t0) / 3
    cls = ENGINES[args.engine]
    engine = cls(args.ncpu, args.nodes, args.queue) if cls is Burla else cls(args.ncpu)
    results: dict[str, Any] = {}
    engine.start()
    try:
        engine.map(tasks.identity, list(range(100)))  # warm
        for w in workloads:
            try:
                if w == "W1":
                    results[w] = w1(engine, args.quick, reps)
                elif w == "W2":
                    results[w] = w2(engine, args.quick, reps)
                elif w == "W3":
                    results[w] = w3(engine, args.quick, reps)
                elif w == "W4":
                    results[w] = w4(engine, args.quick, reps, int(n_iter), serial)
                elif w == "M1":
                    results[w] = m1(engine, args.quick)
                elif w == "W6":
                    results[w] = w6(engine, args.quick)
                elif w == "W8":
                    results[w] = w8(engine, args.quick, reps)
            except NotImplementedError:
                results[w] = {"skipped": "engine cannot stream an iterator"}
            except Exception as e:  # one workload failing must not hide the others
                results[w] = {"error": f"{type(e).__name__}: {e}"}
    finally:
        engine.stop()
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    sys.exit(main())
