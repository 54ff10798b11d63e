"""Smoke test of the benchmark harness (no timing assertions: see benchmarks/README.md)."""

import json
import os
import subprocess
import sys

from .conftest import ROOT


def test_quick_run_measures_burla_and_multiprocessing_and_plots(tmp_path):
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick", "--engines", "burla,mp_pool",
                          "--workloads", "W1,W2,W3,W4,W5,M1,W6,S1,W8", "--out", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    for engine in ("burla", "mp_pool"):
        for w in ("W1", "W2", "W3", "W4", "W5", "M1"):
            result = report["results"][engine][w]
            assert result.get("value", 0) > 0, (engine, w, result, run.stdout, run.stderr[-2000:])
    s1 = report["results"]["burla"]["S1"]
    assert s1["W1"] and s1["W1"]["value"] > 0, (s1, run.stderr[-2000:])
    assert report["results"]["burla"]["W6"]["value"] > 0
    assert report["results"]["burla"]["W8"]["value"] > 0 and report["results"]["burla"]["W8"]["burst_calls_per_s"] > 0
    assert "W8" not in report["results"]["mp_pool"]  # (it has no Executor)
    assert {t["workload"] for t in report["targets"]} == {"W1", "W2", "W3", "W4", "W5", "M1", "W6", "W8"}
    assert "| burla |" in run.stdout
    plot = subprocess.run([sys.executable, "-m", "benchmarks", "plot", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "W1.png").stat().st_size > 1000


def test_cluster_scale_benchmark_runs_a_real_head_against_simulated_nodes(tmp_path):
    out = tmp_path / "cluster.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "cluster", "--nodes", "10", "--quick", "--out", str(out)],
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (s2,) = json.loads(out.read_text())["S2"]
    assert s2["nodes"] == 10 and s2["print_only_s"] > 0 and s2["hold_50ms_s"] > 0, (s2, run.stdout)
    assert s2["nodes_given_work"] > 0
