"""``python -m benchmarks run``: every engine in its own subprocess, then a table."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil

ALL_ENGINES = ["burla", "mp_pool", "ppe", "loky", "dask", "ray_tasks", "ray_pool"]
ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "M1", "W6", "S1", "W8"]
PEERS_ONLY_FOR = {"M1": {"burla", "mp_pool"}, "W6": {"burla"}, "S1": {"burla"}, "W8": {"burla", "ppe", "loky"}}

TARGETS = [  # (workload, description, check(results) -> (ok, detail))
    ("W1", "burla >= 2x mp_pool per-item rate"),
    ("W2", "burla warm 1-input call <= 1 ms median"),
    ("W3", "burla >= 1.25x best peer MB/s"),
    ("W4", "burla parallel efficiency >= 0.95"),
    ("W5", "burla cold start <= 0.5 s"),
    ("M1", "burla client+head peak <= 300 MB, flat from small to large N"),
    ("W6", "burla first result of slow calls (generator) <= 1.1 call durations"),
    ("W8", "burla.Executor: tiny submit().result() <= 1 ms median"),
]


def _env() -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _kill_group(p: subprocess.Popen[str]) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def _run_child(args: list[str], timeout: float) -> dict[str, Any]:
    p = subprocess.Popen([sys.executable, "-m", "benchmarks.child", *args], env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p)
        return {"error": f"timed out after {timeout:g}s"}
    finally:
        _kill_group(p)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])  # type: ignore[no-any-return]
    return {"error": f"exit {p.returncode}: {err.strip().splitlines()[-1] if err.strip() else 'no output'}"}


def _cold(engine: str, ncpu: int, reps: int, timeout: float) -> dict[str, Any]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "benchmarks.cold", engine, str(ncpu)], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            line = ""
            deadline = time.monotonic() + timeout
            while "FIRST" not in line and time.monotonic() < deadline:
                line = p.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    break
            if "FIRST" not in line:
                return {"error": "no first result"}
            times.append(time.perf_counter() - t0)
            p.wait(timeout)
        finally:
            _kill_group(p)
            p.stdout.close()  # type: ignore[union-attr]
    return {"value": statistics.median(times), "min": min(times), "max": max(times), "runs": times, "unit": "s",
            "better": "lower"}


def _ray_stop() -> None:
    if shutil.which("ray"):
        subprocess.run(["ray", "stop", "--force"], check=False, capture_output=True, timeout=60)


def available(engine: str) -> bool:
    mod = {"loky": "loky", "dask": "distributed", "ray_tasks": "ray", "ray_pool": "ray"}.get(engine)
    if mod is None:
        return True
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def run(engines: list[str], workloads: list[str], quick: bool, timeout: float) -> dict[str, Any]:
    ncpu = os.cpu_count() or 2
    results: dict[str, dict[str, Any]] = {}
    for engine in engines:
        if not available(engine):
            results[engine] = {"skipped": "not installed (pip install -e .[bench])"}
            continue
        print(f"... {engine}", file=sys.stderr, flush=True)
        res: dict[str, Any] = {}
        warm = [w for w in workloads
                if w in ("W1", "W2", "W3", "W4", "M1", "W6", "W8") and engine in PEERS_ONLY_FOR.get(w, {engine})]
        if engine.startswith("ray"):
            _ray_stop()
        if warm:
            flags = ["--quick"] if quick else []
            res.update(_run_child(["--engine", engine, "--workloads", ",".join(warm), *flags], timeout))
        if "W5" in workloads:
            res["W5"] = _cold(engine, ncpu, 1 if quick else 3, timeout)
        if "S1" in workloads and engine == "burla":
            quick_flag = ["--quick"] if quick else []
            s1 = _run_child(["--engine", "burla", "--workloads", "W1,W3", "--nodes", "2", *quick_flag], timeout)
            res["S1"] = {"W1": s1.get("W1"), "W3": s1.get("W3"), "error": s1.get("error")}
        if engine.startswith("ray"):
            _ray_stop()
        results[engine] = res
    return {"machine": machine(), "quick": quick, "results": results, "targets": check_targets(results)}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}


def _v(results: dict[str, Any], engine: str, w: str) -> float | None:
    r = results.get(engine, {}).get(w)
    return r.get("value") if isinstance(r, dict) else None


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for w, desc in TARGETS:
        b = _v(results, "burla", w)
        detail, ok = "not measured", None
        if b is not None:
            if w == "W1" and _v(results, "mp_pool", w):
                ratio = b / _v(results, "mp_pool", w)  # type: ignore[operator]
                ok, detail = ratio >= 2, f"{ratio:.2f}x mp_pool"
            elif w == "W2":
                ok, detail = b <= 1.0, f"{b:.3f} ms"
            elif w == "W3":
                peers = [v for e in results if e != "burla" and (v := _v(results, e, w))]
                if peers:
                    ratio = b / max(peers)
                    ok, detail = ratio >= 1.25, f"{ratio:.2f}x best peer ({max(peers):.0f} MB/s)"
            elif w == "W4":
                ok, detail = b >= 0.95, f"{b:.3f}"
            elif w == "W8":
                r = results["burla"]["W8"]
                peers = ", ".join(f"{e} {v:.3f} ms" for e in ("ppe", "loky") if (v := _v(results, e, w)))
                ok = b <= 1.0
                detail = (f"{b:.3f} ms round trip, submit {r['submit_us']:.0f} us, burst "
                          f"{r['burst_calls_per_s']:,.0f} calls/s" + (f"; {peers}" if peers else ""))
            elif w == "W5":
                ok, detail = b <= 0.5, f"{b:.3f} s"
            elif w == "W6":
                r = results["burla"]["W6"]
                ok = r["first_calls"] <= 1.1
                detail = (f"first result at {b:.3f} s = {r['first_calls']:.2f} calls of {r['call_s']:g} s; "
                          f"largest gap {r['max_gap_calls']:.2f} calls")
            elif w == "M1":
                by_n = results["burla"]["M1"]["by_n"]
                sizes = sorted(by_n, key=int)
                small, large = by_n[sizes[0]]["peak_mb"], by_n[sizes[-1]]["peak_mb"]
                ok = b <= 300 and large <= small * 1.25 + 20
                detail = f"{small:.0f} MB at {int(sizes[0]):,} -> {large:.0f} MB at {int(sizes[-1]):,}"
        out.append({"workload": w, "target": desc, "met": ok, "detail": detail})
    return out


def table(report: dict[str, Any]) -> str:
    results = report["results"]
    cols = [w for w in ALL_WORKLOADS if any(w in r for r in results.values())]
    lines = ["| engine | " + " | ".join(_header(w) for w in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for engine, res in results.items():
        if "skipped" in res:
            lines.append(f"| {engine} | " + " | ".join("skipped" for _ in cols) + " |")
            continue
        lines.append(f"| {engine} | " + " | ".join(_cell(res.get(w)) for w in cols) + " |")
    lines.append("")
    for t in report["targets"]:
        mark = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"- {t['workload']} {t['target']}: **{mark}** ({t['detail']})")
    return "\n".join(lines)


def _header(w: str) -> str:
    return {"W1": "W1 calls/s", "W2": "W2 ms", "W3": "W3 MB/s", "W4": "W4 eff", "W5": "W5 cold s",
            "M1": "M1 peak MB", "W6": "W6 first result s", "S1": "S1 2-node W1 / W3",
            "W8": "W8 executor ms"}[w]


def _cell(r: Any) -> str:
    if r is None:
        return "-"
    if "error" in r and r.get("value") is None and "W1" not in r:
        return f"error: {r['error'][:40]}"
    if "skipped" in r:
        return "n/a"
    if "W1" in r:  # S1
        return f"{_cell(r['W1'])} / {_cell(r['W3'])}"
    v = r["value"]
    s = f"{v:,.0f}" if r["unit"] == "calls/s" or r["unit"] == "MB/s" or r["unit"] == "MB" else f"{v:.3f}"
    if "min" in r and r["min"] != r["max"]:
        s += f" ({r['min']:,.3g}–{r['max']:,.3g})"
    return s
