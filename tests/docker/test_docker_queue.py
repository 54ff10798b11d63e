"""`queue: {type: redis}` on a Docker cluster: the cluster runs its own Redis container."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter

import pytest

import burla
from burla import remote_parallel_map as rpm

from .conftest import docker_cluster, docker_objects

pytestmark = pytest.mark.timeout(900)


def slow(x):
    import time

    time.sleep(0.05)
    return x


def redis_cli(container: str, *args: str) -> str:
    out = subprocess.run(["docker", "exec", container, "redis-cli", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def docker(*args: str) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_docker_cluster_keeps_its_queues_in_its_own_redis_and_down_removes_it(image, tmp_path):
    name = f"tq{os.getpid()}"
    redis = f"burla-{name}-redis"
    with docker_cluster(tmp_path, name, ", worker_runtime: process", 1, "queue: {type: redis}\n") as record:
        burla.connect(record["head"], record["token"])
        gen = rpm(slow, range(40), generator=True, spinner=False)
        got = [next(gen)]
        assert redis_cli(redis, "SMEMBERS", f"burla:{name}:jobs").strip()  # the running job is in Redis
        got += list(gen)
        assert sorted(got) == list(range(40))
        # The head's container crashes mid-job: its restart policy brings it back, the new
        # head restores the job from Redis, and the client resumes it.
        head = f"burla-{name}-head"
        tally: Counter = Counter()
        for i, x in enumerate(rpm(slow, range(200), generator=True, spinner=False)):
            tally[x] += 1
            if i == 20:
                os.kill(int(docker("inspect", "-f", "{{.State.Pid}}", head)), signal.SIGKILL)
        assert tally == Counter(range(200))
        assert docker("inspect", "-f", "{{.RestartCount}}", head) == "1"
        assert redis_cli(redis, "CONFIG", "GET", "appendonly").split() == ["appendonly", "yes"]
    assert docker_objects(name) == []  # the Redis container and its volume went with the cluster
