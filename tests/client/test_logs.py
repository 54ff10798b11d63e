"""Print output under backpressure: every line arrives, nothing grows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import psutil

from ..conftest import ROOT

SCRIPT = textwrap.dedent("""
    import os, sys, psutil, burla

    def chatty(n):
        for i in range(n):
            print(f"line {i} of a function that prints as fast as it can")
        return n

    burla.remote_parallel_map(abs, [1], spinner=False)  # the embedded cluster is up
    daemons = [p.pid for p in psutil.Process().children() if "burla" in " ".join(p.cmdline())]
    print("PIDS", *daemons, flush=True)
    total = sum(burla.remote_parallel_map(chatty, [250_000] * 4, spinner=False))
    print("TOTAL", total, flush=True)
""")


def test_a_million_printed_lines_all_arrive_with_flat_memory(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=str(tmp_path))
    env.pop("BURLA_HEAD", None)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    peak: dict[int, int] = {}
    done = threading.Event()

    def sample(pids: list[int]) -> None:
        procs = [psutil.Process(p) for p in pids]
        while not done.wait(0.05):
            for p in procs:
                try:
                    peak[p.pid] = max(peak.get(p.pid, 0), p.memory_info().rss)
                except psutil.Error:
                    pass

    lines = total = 0
    base: dict[int, int] = {}
    sampler = None
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("PIDS"):
                pids = [int(x) for x in line.split()[1:]]
                base = {p: psutil.Process(p).memory_info().rss for p in pids}
                sampler = threading.Thread(target=sample, args=(pids,), daemon=True)
                sampler.start()
            elif line.startswith("TOTAL"):
                total = int(line.split()[1])
            elif line.startswith("line "):
                lines += 1
        assert proc.wait(120) == 0
    finally:
        done.set()
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    assert total == 1_000_000 and lines == 1_000_000
    assert len(base) == 2  # the embedded head and node
    growth = {pid: (peak.get(pid, 0) - rss) / 2**20 for pid, rss in base.items()}
    print(f"daemon RSS growth while 10^6 lines streamed: {growth} MiB")
    assert all(g < 64 for g in growth.values()), f"daemon RSS grew by {growth} MiB"


STALLED_STDOUT = """
import burla
def chatty(i):
    for j in range(20_000):
        print(f"{i:02d} {j:05d} " + "x" * 80)
    return i
out = burla.remote_parallel_map(chatty, range(15), spinner=False)
print("RESULT", sum(out), flush=True)
"""


def test_a_client_whose_stdout_blocks_keeps_its_job(on_cluster):
    """A pager or a slow pipe stops reading: the job waits for it (the log window), and the
    client's connection lives on (its loop thread never writes to stdout)."""
    import subprocess
    import sys
    import time

    from ..conftest import ROOT

    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_HEAD=on_cluster.record.head, BURLA_TOKEN=on_cluster.record.token)
    p = subprocess.Popen([sys.executable, "-c", STALLED_STDOUT], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(20)  # the fault itself: nobody reads the pipe for 20 s, past the 6 s idle timeout
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    lines = out.decode().splitlines()
    assert p.returncode == 0, err.decode()[-2000:]
    assert lines[-1] == f"RESULT {sum(range(15))}" and len(lines) == 300_001
