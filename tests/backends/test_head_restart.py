"""A supervised head SIGKILLed mid-job, with its queues in a real redis-server:
the new head restores the jobs, nodes and clients reconnect, and every input
yields exactly one result at the client."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import http_get, wait_for_nodes, wait_until

SUPERVISOR = ["--restarts", "100", "--within", "1"]  # restart at once, however often the test kills it


def slow(x):
    import time

    time.sleep(0.02)
    return x


def head_pid(cluster) -> int:
    """The head process: the supervisor's child."""
    sup = cluster.record.pids[0]
    with open(f"/proc/{sup}/task/{sup}/children") as f:
        children = f.read().split()
    assert len(children) == 1, children
    return int(children[0])


def kill_head(cluster) -> None:
    """SIGKILL the head; returns once the supervisor started the next one."""
    old = head_pid(cluster)
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return head_pid(cluster) != old
        except AssertionError:
            return False

    wait_until(restarted, 30, "the supervisor to start a new head")


def run_with_kill(inputs, kill_after: int, cluster) -> Counter:
    """Run a job, SIGKILL the head once ``kill_after`` results came back; the results' tally."""
    got: Counter = Counter()
    for i, x in enumerate(rpm(slow, inputs, generator=True, spinner=False)):
        got[x] += 1
        if i + 1 == kill_after:
            kill_head(cluster)
    return got


@pytest.fixture
def supervised(clusters, redis_url):
    cluster = clusters.start(nodes=2, workers_per_node=2, queue=redis_url, supervisor=SUPERVISOR)
    burla.connect(cluster.record.head, cluster.record.token)
    return cluster


def test_a_head_killed_mid_job_comes_back_and_the_job_loses_and_repeats_nothing(supervised, capfd):
    got = run_with_kill(list(range(300)), 60, supervised)
    assert got == Counter(range(300))
    assert capfd.readouterr().err.count("head restarted, job resumed") == 1
    wait_for_nodes(supervised, 2)
    assert http_get(supervised, "/v1/cluster")["queue"].startswith("redis://")


def test_a_generator_streaming_while_the_head_dies_loses_no_input(supervised):
    got = run_with_kill((x for x in range(400)), 30, supervised)
    assert got == Counter(range(400))


def test_two_clients_whose_jobs_span_a_head_restart(supervised):
    tallies: list[Counter] = [Counter(), Counter()]
    halfway = threading.Barrier(3, timeout=60)

    def client(k: int) -> None:
        for i, x in enumerate(rpm(slow, range(k * 1000, k * 1000 + 200), generator=True, spinner=False)):
            tallies[k][x] += 1
            if i == 20:
                halfway.wait()

    threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    halfway.wait()
    kill_head(supervised)
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert tallies == [Counter(range(200)), Counter(range(1000, 1200))]
