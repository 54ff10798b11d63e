from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

import burla
from burla.cloud import LocalCluster, start_local_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The suite's own environment (~140 distributions) is not what its jobs need: jobs on container
# nodes run with the image's packages, except where a test turns syncing on (tests/docker/test_environment.py).
os.environ["BURLA_SYNC_PACKAGES"] = "0"


def wait_until(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``cond`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def burla_descendants() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "burla" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    if request.param == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.fixture
def run(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> Iterator[Callable]:
    """Run a coroutine on asyncio and on uvloop; a loop error fails the test."""
    errors: list[dict] = []

    def runner(coro):  # type: ignore[no-untyped-def]
        with asyncio.Runner(loop_factory=loop_factory) as r:
            r.get_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
            result = r.run(coro)
        assert not errors, errors
        return result

    yield runner


class Clusters:
    """Starts attached local clusters and stops them, even when a test fails."""

    def __init__(self) -> None:
        self.started: list[LocalCluster] = []

    def start(self, nodes: int = 1, workers_per_node: int | None = 2, wait: bool = True,
              queue: str = "memory", supervisor: list[str] | None = None) -> LocalCluster:
        cluster = start_local_cluster(f"test{len(self.started)}", nodes, workers_per_node, attached=True, queue=queue,
                                      supervisor=supervisor)
        self.started.append(cluster)
        if wait:
            wait_for_nodes(cluster, nodes)
        return cluster

    def stop_all(self) -> None:
        burla.shutdown()
        for c in self.started:
            c.stop()


def http_get(cluster: LocalCluster, route: str) -> dict:
    from burla.cli._fetch import fetch

    return fetch(cluster.record, route)


def wait_for_nodes(cluster: LocalCluster, nodes: int) -> None:
    def ready() -> bool:
        try:
            return len(http_get(cluster, "/v1/cluster")["nodes"]) >= nodes
        except OSError:
            return False

    wait_until(ready, 30, f"{nodes} node(s) to register")


@pytest.fixture(scope="session")
def session_clusters() -> Iterator[Clusters]:
    clusters = Clusters()
    yield clusters
    clusters.stop_all()


@pytest.fixture(scope="session")
def shared_cluster(session_clusters: Clusters) -> LocalCluster:
    """One node with two workers, shared by the tests that only use it."""
    return session_clusters.start(nodes=1, workers_per_node=2)


@pytest.fixture
def on_cluster(shared_cluster: LocalCluster) -> LocalCluster:
    burla.connect(shared_cluster.record.head, shared_cluster.record.token)
    wait_until(lambda: all(n["job_id"] is None for n in http_get(shared_cluster, "/v1/cluster")["nodes"]),
               10, "the shared node to be free")
    return shared_cluster


@pytest.fixture
def clusters() -> Iterator[Clusters]:
    c = Clusters()
    try:
        yield c
    finally:
        c.stop_all()


def run_script(code: str, env: dict | None = None, timeout: float = 60, cwd: str | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)


@pytest.fixture(autouse=True, scope="session")
def no_leaked_processes(session_clusters: Clusters) -> Iterator[None]:
    """After the whole suite, every process a test started must be gone."""
    yield
    session_clusters.stop_all()
    wait_until(lambda: not burla_descendants(), 10, "burla processes started by the tests to exit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that share built images or a fake cloud keep to one test process (xdist's loadgroup):
    the Docker ones together, each Compute Engine module alone (its fake and its VMs)."""
    for item in items:
        parts = item.nodeid.split("::")[0].split("/")
        if len(parts) > 2 and parts[1] == "docker":
            item.add_marker(pytest.mark.xdist_group("docker"))
        elif len(parts) > 2 and parts[1] == "gce":
            item.add_marker(pytest.mark.xdist_group(parts[2]))
