"""Cluster behaviour: many nodes, many clients, failures, cancellation, backpressure."""

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import ROOT, http_get, wait_until


def node_pid_of_worker(x):
    import os
    import time

    time.sleep(0.02)
    return os.getppid()


def slow_identity(x):
    import time

    time.sleep(0.05)
    return x


def test_two_nodes_share_one_job(clusters):
    c = clusters.start(nodes=2, workers_per_node=2)
    burla.connect(c.record.head, c.record.token)
    parents = rpm(node_pid_of_worker, range(80), spinner=False)
    node_pids = {p.pid for p in c.procs[1:]}
    assert set(parents) == node_pids


def test_dead_node_does_not_fail_the_job(clusters):
    c = clusters.start(nodes=2, workers_per_node=2)
    burla.connect(c.record.head, c.record.token)
    gen = rpm(slow_identity, range(120), generator=True, spinner=False)
    got = [next(gen)]
    wait_until(lambda: all(n["job_id"] for n in http_get(c, "/v1/cluster")["nodes"]), 10, "both nodes on the job")
    victim = c.procs[2]
    victim.kill()
    got += list(gen)
    assert sorted(got) == list(range(120))
    victim.wait(5)


def _client_script(body: str) -> str:
    return "import burla, sys, time\n" + body


def _env(c) -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, BURLA_HEAD=c.record.head, BURLA_TOKEN=c.record.token)


def test_two_clients_jobs_at_once(clusters):
    c = clusters.start(nodes=2, workers_per_node=1)
    code = _client_script(
        "def f(x):\n    time.sleep(0.01)\n    return x * 2\n"
        "print(sum(burla.remote_parallel_map(f, range(200), spinner=False)))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], env=_env(c), stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert outs == [str(2 * sum(range(200)))] * 2


def test_wrong_token_raises_authentication_error(on_cluster):
    burla.connect(on_cluster.record.head, "not-the-token")
    try:
        with pytest.raises(burla.AuthenticationError, match=on_cluster.record.head):
            rpm(abs, [1], spinner=False)
    finally:
        burla.connect(on_cluster.record.head, on_cluster.record.token)


def test_unreachable_head_raises_within_five_seconds(on_cluster):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    burla.connect(address, "t")
    t0 = time.monotonic()
    try:
        with pytest.raises(burla.ClusterUnreachable, match=address):
            rpm(abs, [1], spinner=False)
    finally:
        burla.connect(on_cluster.record.head, on_cluster.record.token)
    assert time.monotonic() - t0 < 5


def _listening_ports(pid: int) -> list[int]:
    return [c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]


def _worker_socket(pid: int) -> str:
    paths = {c.laddr for c in psutil.Process(pid).net_connections("unix") if str(c.laddr).endswith("workers.sock")}
    assert len(paths) == 1, paths
    return paths.pop()


def _connect(address):
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(address)
        return s
    return socket.create_connection(("127.0.0.1", address), timeout=5)


def test_garbage_on_every_port_leaves_the_cluster_working(on_cluster):
    head, node = on_cluster.procs[0], on_cluster.procs[1]
    ports = _listening_ports(head.pid)
    assert len(ports) == 2  # head TCP, head HTTP
    for address in [*ports, _worker_socket(node.pid)]:  # + the node's socket for its workers
        for garbage in (os.urandom(4096), b"\xff\xff\xff\xff" + b"x" * 100, b"BURLA\x01" + b"\x00" * 64):
            with _connect(address) as s:
                s.sendall(garbage)
                s.settimeout(10)
                try:
                    while s.recv(65536):
                        pass
                except (TimeoutError, ConnectionResetError):
                    pass
    assert rpm(abs, [-1, -2], spinner=False) == [1, 2]
    assert head.poll() is None and node.poll() is None


def test_client_that_stops_reading_stalls_its_job(on_cluster):
    gen = rpm(abs, range(3_000_000), generator=True, spinner=False)
    next(gen)

    def delivered():
        jobs = [j for j in http_get(on_cluster, "/v1/jobs")["jobs"] if j["state"] == "running"]
        return jobs[0]["done"] if jobs else None

    samples = []

    def stalled():
        samples.append(delivered())
        time.sleep(0.3)  # sampling interval of the plateau check, not synchronisation
        return len(samples) > 3 and samples[-1] == samples[-2] == samples[-3]

    wait_until(stalled, 30, "the job to stall")
    assert samples[-1] < 3_000_000
    from burla.scheduler import HeadConfig

    cfg, slots = HeadConfig(), 2  # the shared cluster: one node, two workers
    window = cfg.result_window + 2 * cfg.prefetch_per_worker * slots
    assert samples[-1] <= window * 1024 + 1024  # result window x largest batch
    gen.close()  # cancels the job
    wait_until(lambda: all(n["job_id"] is None for n in http_get(on_cluster, "/v1/cluster")["nodes"]), 5,
               "the node to be freed")


def test_endless_generator_streams_with_flat_memory(on_cluster):
    head = psutil.Process(on_cluster.procs[0].pid)
    me = psutil.Process()
    n = 2_000_000
    rss = {}
    for i, _ in enumerate(rpm(abs, (i for i in range(n)), generator=True, spinner=False)):
        if i in (n // 4, n - 1):
            rss[i] = (me.memory_info().rss, head.memory_info().rss)
    growth_client = rss[n - 1][0] - rss[n // 4][0]
    growth_head = rss[n - 1][1] - rss[n // 4][1]
    assert growth_client < 30 << 20 and growth_head < 30 << 20, (growth_client, growth_head)


CANCEL_SCRIPT = _client_script(
    "def f(x):\n    print('running', x, flush=True)\n    time.sleep(60)\n"
    "try:\n    burla.remote_parallel_map(f, range(4))\n"
    "except burla.JobCanceled as e:\n    print('CANCELED', e, flush=True)\n    sys.exit(3)\n"
)


def _start_and_wait_running(c) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", CANCEL_SCRIPT], env=_env(c), stdout=subprocess.PIPE, text=True)
    wait_until(lambda: "running" in p.stdout.readline(), 30, "the job to start")
    return p


def test_ctrl_c_cancels_the_job_and_frees_workers(clusters):
    c = clusters.start(nodes=1, workers_per_node=2)
    p = _start_and_wait_running(c)
    try:
        workers_before = {w.pid for w in psutil.Process(c.procs[1].pid).children()}
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=10)
        assert p.returncode == 3 and "CANCELED" in out
        wait_until(lambda: all(n["job_id"] is None for n in http_get(c, "/v1/cluster")["nodes"]), 2,
                   "the node to be freed")
        # the workers that were stuck in time.sleep(60) were killed and replaced
        wait_until(lambda: not workers_before & {w.pid for w in psutil.Process(c.procs[1].pid).children()}, 2,
                   "busy workers to be killed")
        assert time.monotonic() - t0 < 4
    finally:
        p.kill()


def test_client_killed_mid_job_frees_the_nodes(clusters):
    c = clusters.start(nodes=1, workers_per_node=2)
    p = _start_and_wait_running(c)
    p.kill()
    p.wait()
    p.stdout.close()
    wait_until(lambda: all(n["job_id"] is None for n in http_get(c, "/v1/cluster")["nodes"]), 5,
               "the node to be freed")
    burla.connect(c.record.head, c.record.token)
    assert rpm(abs, [-3], spinner=False) == [3]


def test_nodes_come_back_after_the_head_pauses_past_their_timeout(clusters):
    c = clusters.start(nodes=1, workers_per_node=1)
    head, node = psutil.Process(c.procs[0].pid), psutil.Process(c.procs[1].pid)
    port = int(c.record.head.rsplit(":", 1)[1])
    link = {x.laddr for x in node.net_connections("tcp") if x.raddr and x.raddr.port == port}
    head.suspend()  # a 10 s pause: the node declares it dead after 6 s
    try:
        wait_until(lambda: not link & {x.laddr for x in node.net_connections("tcp")}, 30, "the node to drop the link")
    finally:
        head.resume()
    assert node.is_running() and node.status() != psutil.STATUS_ZOMBIE  # it did not give up
    wait_until(lambda: len(http_get(c, "/v1/cluster")["nodes"]) == 1, 60, "the node to register again")
    burla.connect(c.record.head, c.record.token)
    assert rpm(slow_identity, range(4), spinner=False) == list(range(4))


def test_an_authenticated_peer_cannot_evict_a_live_node_or_crash_the_head(on_cluster):
    import asyncio

    from burla.transport import connect
    from burla.transport._framing import frame_message
    from burla.transport.messages import NodeHello

    host, port = on_cluster.record.head.rsplit(":", 1)
    (live,) = [n["node_id"] for n in http_get(on_cluster, "/v1/cluster")["nodes"]]

    async def impostor():
        conn = await connect(host, int(port), on_cluster.record.token)
        conn.send_nowait(NodeHello(live, "evil", 64, 1 << 40, 64))
        with pytest.raises(burla.ConnectionLost):
            await asyncio.wait_for(conn.recv(), 10)  # refused: closed without a Welcome
        deep = await connect(host, int(port), on_cluster.record.token)
        for chunk in frame_message(b"\x91" * 200_000 + b"\xc0"):  # 200,000 nested arrays
            deep._transport.write(chunk)
        with pytest.raises(burla.ConnectionLost):
            await asyncio.wait_for(deep.recv(), 10)

    asyncio.run(impostor())
    nodes = http_get(on_cluster, "/v1/cluster")["nodes"]
    assert [(n["node_id"], n["host"]) for n in nodes] == [(live, nodes[0]["host"])] and nodes[0]["host"] != "evil"
    assert rpm(abs, [-1, -2], spinner=False) == [1, 2]
    assert on_cluster.procs[0].poll() is None
