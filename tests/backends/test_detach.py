"""Detached jobs (``remote_parallel_map(..., detach=True)``, ``burla.job``) on a supervised
local cluster with its queues in a real redis-server: the job outlives its client
(SIGKILLed) and its head (SIGKILLed), and each result is taken exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import ROOT, http_get, wait_until
from .test_head_restart import SUPERVISOR, kill_head

SUBMIT = """
import sys, time, burla

def slow(x):
    import time
    time.sleep(0.02)
    return x * 10

def inputs():
    for i in range({n}):
        if i == {n} // 2:
            print("HALF", flush=True)
            {at_half}
        yield i

job = burla.remote_parallel_map(slow, inputs(), detach=True, spinner=False)
print("JOB", job.job_id, flush=True)
time.sleep(600)  # then SIGKILLed: the job runs on
"""


def client(cluster, n: int, at_half: str = "pass") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_HEAD=cluster.record.head, BURLA_TOKEN=cluster.record.token)
    return subprocess.Popen([sys.executable, "-c", SUBMIT.format(n=n, at_half=at_half)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def job_id_of(proc: subprocess.Popen) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("JOB "):
            return line.split()[1]
    raise AssertionError(f"the client printed no job id: {proc.communicate(timeout=10)}")


@pytest.fixture
def cluster(clusters, redis_url):
    c = clusters.start(nodes=2, workers_per_node=2, queue=redis_url, supervisor=SUPERVISOR)
    burla.connect(c.record.head, c.record.token)
    yield c
    burla.shutdown()


def test_a_detached_job_outlives_its_sigkilled_client_and_a_head_restart(cluster):
    proc = client(cluster, 300)
    try:
        job_id = job_id_of(proc)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert f"done uploading inputs: job {job_id} runs on without this client" in err
    job = burla.job(job_id)
    assert job.status().state == "running" and job.status().total == 300
    wait_until(lambda: job.status().done >= 50, 60, "50 results")
    kill_head(cluster)  # with no client attached: the job is restored and runs on by itself
    wait_until(lambda: _status(job).state == "done", 120, "the job to end")
    status = job.status()
    assert (status.done, status.waiting) == (300, 300)
    listed = [j for j in http_get(cluster, "/v1/jobs")["jobs"] if j["job_id"] == job_id]
    assert listed and (listed[0]["state"], listed[0]["detached"], listed[0]["results_waiting"]) == ("done", True, 300)
    assert Counter(job.results()) == Counter(x * 10 for x in range(300))
    wait_until(lambda: job.status().state == "unknown", 10, "the job, all taken, to be forgotten")
    with pytest.raises(burla.JobNotFound):
        list(job.results())


def _status(job):
    try:
        return job.status()
    except burla.ClusterUnreachable:  # (the head was restarting: lost, or not answering yet)
        return burla.client._detached.JobStatus(job.job_id, "?", None, 0, 0)


def test_a_reader_that_stops_leaves_the_rest_to_the_next_one_across_a_head_restart(cluster):
    job = rpm(lambda x: x + 1, range(400), detach=True, spinner=False)
    assert isinstance(job, burla.Job)
    got: Counter = Counter()
    for i, x in enumerate(job.results()):
        got[x] += 1
        if i == 99:
            break
    reader = job.results()
    got[next(reader)] += 1
    kill_head(cluster)  # mid-read: the reader reconnects, attaches again and goes on
    for x in reader:
        got[x] += 1
    assert got == Counter(range(1, 401))


def test_ctrl_c_before_the_upload_ends_cancels_the_job(cluster):
    proc = client(cluster, 200, at_half="time.sleep(600)")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "HALF"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "JobCanceled" in err and "before every input was uploaded" in err
    assert "done uploading" not in err


def test_the_embedded_cluster_refuses_detach(tmp_path):
    code = "import burla\nburla.remote_parallel_map(abs, [1], detach=True)"
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("BURLA_HEAD", None)
    env.pop("BURLA_TOKEN", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "burla.ConfigError: detach=True needs a cluster that outlives this process" in \
        out.stderr, out.stderr
