"""Chaos: the supervised head SIGKILLed at random points of jobs, with its queues in
a real redis-server; a node killed while the head is down.  Each run tallies
every input's results at the client: the tally must be exactly one each."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections import Counter

import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import wait_until
from .test_head_on_redis import keys
from .test_head_restart import SUPERVISOR, head_pid, kill_head

RUNS = 20


def work(i, seconds):  # a tuple input is the call's arguments
    import time

    time.sleep(seconds)
    return i


def run_once(rng: random.Random, cluster, redis_url: str) -> tuple[int, Counter, str]:
    """One job; the head is SIGKILLed once, at a random point. Returns (inputs, tally, how)."""
    n = rng.randrange(40, 250)
    seconds = rng.choice([0.0, 0.002, 0.01, 0.05])
    streamed = rng.random() < 0.5
    kill_at = rng.randrange(0, n // 2)  # after this many results (0: once the job is stored)
    how = f"{n} inputs of {seconds}s, {'a generator' if streamed else 'a list'}, head killed after {kill_at} results"
    items = [(i, seconds) for i in range(n)]
    inputs = (x for x in items) if streamed else items
    tally: Counter = Counter()
    if kill_at == 0:
        stored = threading.Thread(target=kill_when_stored, args=(cluster, redis_url))
        stored.start()
    for i, x in enumerate(rpm(work, inputs, generator=True, spinner=False)):
        tally[x] += 1
        if i + 1 == kill_at:
            kill_head(cluster)
    if kill_at == 0:
        stored.join(60)
    return n, tally, how


def kill_when_stored(cluster, redis_url: str) -> None:
    wait_until(lambda: any(k.endswith(":meta") for k in keys(redis_url)), 30, "the job to be stored")
    kill_head(cluster)


def test_the_head_sigkilled_at_random_points_loses_and_repeats_no_result(clusters, redis_url, capsys):
    cluster = clusters.start(nodes=2, workers_per_node=2, queue=redis_url, supervisor=SUPERVISOR)
    burla.connect(cluster.record.head, cluster.record.token)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    runs = lost = duplicated = 0
    failures: list[str] = []
    for _ in range(RUNS):
        n, tally, how = run_once(rng, cluster, redis_url)
        missing = sum(1 for i in range(n) if tally[i] == 0)
        extra = sum(c - 1 for c in tally.values() if c > 1) + sum(c for i, c in tally.items() if not 0 <= i < n)
        runs += 1
        lost += missing
        duplicated += extra
        if missing or extra:
            failures.append(f"{how}: {missing} lost, {extra} duplicated")
    with capsys.disabled():
        print(f"\nchaos (seed {seed}): {runs} runs, {lost} results lost, {duplicated} duplicated")
    assert (runs, lost, duplicated) == (RUNS, 0, 0), failures


def test_a_node_killed_while_the_head_is_down(clusters, redis_url):
    cluster = clusters.start(nodes=2, workers_per_node=2, queue=redis_url, supervisor=SUPERVISOR)
    burla.connect(cluster.record.head, cluster.record.token)
    supervisor, node = cluster.record.pids[0], cluster.record.pids[1]
    tally: Counter = Counter()
    for i, x in enumerate(rpm(work, [(i, 0.02) for i in range(300)], generator=True, spinner=False)):
        tally[x] += 1
        if i == 40:
            os.kill(supervisor, signal.SIGSTOP)  # no head comes back until the node is dead
            try:
                head = head_pid(cluster)
                os.kill(head, signal.SIGKILL)
                wait_until(lambda: not os.path.exists(f"/proc/{head}/stat") or zombie(head), 10, "the head to die")
                os.kill(node, signal.SIGKILL)
            finally:
                os.kill(supervisor, signal.SIGCONT)
    assert tally == Counter(range(300))


def zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture(autouse=True)
def _no_connected_cluster():
    yield
    burla.shutdown()
