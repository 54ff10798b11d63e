"""A real head under attack by peers that do not know the token, or do and misbehave (issue 11)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import psutil
import pytest

import burla
from burla._loop import raise_fd_limit
from burla.cloud import LocalCluster, start_local_cluster
from tests.conftest import wait_for_nodes

FLOOD = 5000


@pytest.fixture
def logged_cluster(tmp_path) -> Iterator[tuple[LocalCluster, str]]:
    cluster = start_local_cluster("hostile", nodes=1, workers_per_node=2, attached=True, log_dir=str(tmp_path))
    try:
        wait_for_nodes(cluster, 1)
        yield cluster, str(tmp_path / "head.log")
    finally:
        burla.shutdown()
        cluster.stop()


def double(x):
    return 2 * x


def test_a_flood_of_silent_connections_costs_little_and_real_clients_still_get_in(logged_cluster):
    cluster, head_log = logged_cluster
    if raise_fd_limit() < FLOOD + 500:
        pytest.skip(f"needs {FLOOD + 500} file descriptors")
    head = psutil.Process(cluster.procs[0].pid)
    before = head.memory_info().rss
    host, port = cluster.record.head.rsplit(":", 1)
    flood = []
    try:
        for _ in range(FLOOD):  # connect, never say a word
            flood.append(socket.create_connection((host, int(port))))
        grown = head.memory_info().rss - before
        burla.connect(cluster.record.head, cluster.record.token)
        assert burla.remote_parallel_map(double, range(200), spinner=False) == [2 * x for x in range(200)]
        # the head holds at most max_unauthenticated (1,024) of them; the rest were evicted
        assert head.num_fds() < 1024 + 200
    finally:
        for s in flood:
            s.close()
    assert grown <= 25 * 2**20, f"{FLOOD} silent connections grew the head by {grown / 2**20:.1f} MiB"
    with open(head_log) as f:
        closings = [line for line in f if "closing 127.0.0.1:" in line]
    assert len(closings) == 1, closings  # one line per source per minute, not one per connection
    assert "further closings from 127.0.0.1 are counted" in closings[0]


def test_a_hundred_thousand_fuzzed_authenticated_messages_hurt_nobody(logged_cluster, tmp_path):
    import asyncio

    from tests.conftest import http_get, wait_until
    from tests.fuzz_head import Fuzzer

    cluster, _head_log = logged_cluster
    (live,) = [n["node_id"] for n in http_get(cluster, "/v1/cluster")["nodes"]]
    host, port = cluster.record.head.rsplit(":", 1)
    stats = asyncio.run(Fuzzer(host, int(port), cluster.record.token, live, seed=7).run(100_000))
    assert stats.messages >= 100_000 and stats.takeovers > 100 and len(stats.kinds) >= 12
    assert cluster.procs[0].poll() is None and cluster.procs[1].poll() is None  # head and node alive
    # the fuzzer's nodes left with it; the live node was never evicted by a NodeHello reusing its id
    wait_until(lambda: [n["node_id"] for n in http_get(cluster, "/v1/cluster")["nodes"]] == [live], 10,
               "only the real node to be registered")
    wait_until(lambda: all(j["state"] != "running" for j in http_get(cluster, "/v1/jobs")["jobs"]), 10,
               "the fuzzer's jobs to end with their clients")
    burla.connect(cluster.record.head, cluster.record.token)
    assert burla.remote_parallel_map(double, range(500), spinner=False) == [2 * x for x in range(500)]
    for name in ("head.log", "node-0.log"):
        text = (tmp_path / name).read_text()
        assert "Traceback" not in text, text[text.index("Traceback") - 300:][:3000]
