"""The head writing its jobs to a real redis-server (``--queue redis://...``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import ROOT, wait_until
from .redis_server import RedisServer


def slow(x):
    import time

    time.sleep(0.05)
    return x


def keys(url: str) -> list[str]:
    import redis

    with redis.Redis.from_url(url) as r:
        return sorted(k.decode() for k in r.keys("burla:*"))


def test_jobs_run_with_their_queues_in_redis_and_leave_nothing_there(clusters, redis_url):
    from ..conftest import http_get

    cluster = clusters.start(nodes=1, workers_per_node=2, queue=redis_url)
    assert http_get(cluster, "/v1/cluster")["queue"] == redis_url
    burla.connect(cluster.record.head, cluster.record.token)
    assert rpm(slow, range(200), spinner=False) == list(range(200))
    with pytest.raises(ZeroDivisionError):
        rpm(lambda x: 1 / x, [1, 0], spinner=False)
    wait_until(lambda: keys(redis_url) == [], 10, "the ended jobs' records to go")


def test_a_redis_outage_holds_results_back_and_loses_none(clusters):
    server = RedisServer()
    try:
        cluster = clusters.start(nodes=1, workers_per_node=2, queue=server.url)
        burla.connect(cluster.record.head, cluster.record.token)
        got: list[int] = []
        paused = threading.Event()

        def consume() -> None:
            for x in rpm(slow, range(100), generator=True, spinner=False):
                got.append(x)
                if len(got) == 10:
                    assert server.proc is not None
                    os.kill(server.proc.pid, signal.SIGSTOP)  # Redis hangs: nothing can be made final
                    paused.set()

        t = threading.Thread(target=consume)
        t.start()
        assert paused.wait(60)
        held = len(got)
        # while Redis is stopped no result reaches the client (it is not final yet)
        assert not wait_or_false(lambda: len(got) > held + 2, 2.0)
        os.kill(server.proc.pid, signal.SIGCONT)
        t.join(60)
        assert not t.is_alive() and sorted(got) == list(range(100))
    finally:
        server.close()


def wait_or_false(cond, seconds: float) -> bool:
    try:
        wait_until(cond, seconds, "")
        return True
    except AssertionError:
        return False


def test_a_head_that_cannot_reach_redis_says_so_and_exits():
    from .redis_server import _free_port

    url = f"redis://127.0.0.1:{_free_port()}/0"
    out = subprocess.run([sys.executable, "-m", "burla", "head", "--queue", url], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 2 and f"burla head: cannot reach Redis at {url}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    bad = subprocess.run([sys.executable, "-m", "burla", "head", "--queue", "mongo://x"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert bad.returncode == 2 and "--queue 'mongo://x': expected memory or redis://HOST:PORT/DB" in bad.stderr


def test_cluster_yaml_names_the_queue_backend():
    from burla._errors import ConfigError
    from burla.cloud._spec import load_spec

    spec = load_spec("provider: {type: local}\nqueue: {type: redis, url: 'redis://10.0.0.5:6379/2'}\n")
    assert spec.queue.head_arg() == "redis://10.0.0.5:6379/2" and load_spec("nodes: 1\n").queue.head_arg() == "memory"
    with pytest.raises(ConfigError, match=r"queue.url: expected redis://HOST:PORT/DB"):
        load_spec("queue: {type: redis, url: 'localhost:6379'}\n")
    with pytest.raises(ConfigError, match=r"queue.type: .*memory.*redis"):
        load_spec("queue: {type: mongo}\n")
    with pytest.raises(ConfigError, match=r"cluster.yaml: queue: a local cluster uses your Redis: give its url"):
        load_spec("queue: {type: redis}\n")
    assert load_spec("provider: {type: docker}\nqueue: {type: redis}\n").queue.url == ""  # Docker runs its own




def test_a_new_head_drops_a_job_it_cannot_read_back_and_touches_no_other_cluster(redis_url):
    import asyncio

    from burla.scheduler.backends import open_backend

    async def leave(cluster: str, job_id: str) -> None:
        b = open_backend("redis", redis_url, cluster)
        await b.open()
        await b.create_job(job_id, b"spec")
        await b.add_inputs(job_id, 0, 1, b"in")
        await b.close()

    asyncio.run(leave("stale", "j-old"))
    asyncio.run(leave("other", "j-theirs"))
    head = subprocess.Popen([sys.executable, "-m", "burla", "head", "--name", "stale", "--queue", redis_url],
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert head.stdout is not None and '"head"' in head.stdout.readline()  # it serves
        assert all(k.startswith("burla:other:") for k in keys(redis_url)) and keys(redis_url)
    finally:
        head.terminate()
        _, err = head.communicate(timeout=30)
    assert "dropping a job a previous head left, which cannot be read back: job j-old" in err


def test_redis_restarted_mid_job_with_persistence_loses_and_repeats_nothing(clusters):
    server = RedisServer(persist=True)
    try:
        cluster = clusters.start(nodes=1, workers_per_node=2, queue=server.url)
        burla.connect(cluster.record.head, cluster.record.token)
        got: list[int] = []
        for x in rpm(slow, range(150), generator=True, spinner=False):
            got.append(x)
            if len(got) in (20, 60, 100):  # three restarts, each with writes in flight
                server.kill()
                server.start()
        assert sorted(got) == list(range(150))  # each input once: none lost, none twice
        wait_until(lambda: keys(server.url) == [], 10, "the ended job's keys to go")
    finally:
        server.close()


def test_a_redis_that_refuses_writes_fails_the_job_saying_so(clusters):
    import redis

    server = RedisServer()
    try:
        with redis.Redis.from_url(server.url) as r:  # full: Redis answers every write with an OOM error
            r.config_set("maxmemory", "3mb")
            r.config_set("maxmemory-policy", "noeviction")
        cluster = clusters.start(nodes=1, workers_per_node=2, queue=server.url)
        burla.connect(cluster.record.head, cluster.record.token)
        with pytest.raises(burla.JobFailed, match=r"the queue backend refused a write \(OutOfMemoryError: .*maxmemory"):
            rpm(len, [b"x" * (1 << 20)] * 8, spinner=False)
    finally:
        server.close()
