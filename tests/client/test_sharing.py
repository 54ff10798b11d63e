"""Work distribution on real multi-node local clusters (issue 10): every slot is used, results
stream, and a second job gets a fair share of a cluster a big job holds, between calls."""

import os
import subprocess
import sys

import burla
from burla import remote_parallel_map as rpm

from ..conftest import ROOT, http_get, wait_until


def worker_pid(seconds):
    import os
    import time

    time.sleep(seconds)
    return os.getpid(), os.getppid()


def test_every_slot_of_a_multi_node_cluster_runs_slow_calls(clusters):
    c = clusters.start(nodes=2, workers_per_node=10)  # 20 slots on 2 CPUs: the calls sleep
    burla.connect(c.record.head, c.record.token)
    wait_until(lambda: http_get(c, "/v1/cluster")["workers"] == 20, 60, "both nodes to register")
    ran = rpm(worker_pid, [0.3] * 60, spinner=False)
    assert len({pid for pid, _ in ran}) == 20  # no slot left idle while inputs were queued
    assert len({node for _, node in ran}) == 2


def test_results_stream_from_every_node_of_a_cluster(clusters, tmp_path):
    from .test_map import _waits_for_its_neighbour

    c = clusters.start(nodes=2, workers_per_node=1)
    burla.connect(c.record.head, c.record.token)
    got = []
    for value in rpm(_waits_for_its_neighbour, [(i, str(tmp_path)) for i in range(10)], generator=True,
                     spinner=False):
        (tmp_path / str(value)).touch()  # odd inputs run only once the client has this one
        got.append(value)
    assert sorted(got) == list(range(10))


BIG_JOB = """
import burla, sys, time
def nap(x):
    time.sleep(0.05)
    return x
gen = burla.remote_parallel_map(nap, range(600), generator=True, spinner=False)
total = next(gen)
print("STARTED", flush=True)
total += sum(gen)
print("DONE", total, flush=True)
"""


def test_a_second_job_runs_at_once_on_a_fair_share_of_a_cluster_a_big_job_holds(clusters):
    c = clusters.start(nodes=4, workers_per_node=1)
    wait_until(lambda: http_get(c, "/v1/cluster")["workers"] == 4, 60, "every node to register")
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_HEAD=c.record.head, BURLA_TOKEN=c.record.token)
    big = subprocess.Popen([sys.executable, "-c", BIG_JOB], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert big.stdout.readline().strip() == "STARTED"
        wait_until(lambda: all(n["job_id"] for n in http_get(c, "/v1/cluster")["nodes"]), 20,
                   "the big job to hold every node")
        burla.connect(c.record.head, c.record.token)
        ran = rpm(worker_pid, [0.05] * 8, spinner=False)  # 7 s of the big job queued ahead of it
        assert big.poll() is None  # it did not wait for the big job to end
        assert len({node for _, node in ran}) >= 2  # its share: half of the 4 nodes
        out, _ = big.communicate(timeout=120)
        assert out.split() == ["DONE", str(sum(range(600)))]  # the big job lost nothing
    finally:
        big.kill()
        big.wait()
