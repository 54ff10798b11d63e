"""The Docker provider on the real engine: nodes and workers as containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import burla
from burla import remote_parallel_map as rpm

from ..conftest import wait_until
from .conftest import burla_cli, cli_env, docker_objects

# The first test also sets up the image fixture: on a fresh machine that is a
# Debian base, every dependency's wheel and a docker build.
pytestmark = pytest.mark.timeout(900)


def http(record: dict, route: str) -> dict:
    from burla.cli._fetch import fetch
    from burla.cloud import ClusterRecord

    return fetch(ClusterRecord(name=record["name"], http=record["http"], token=record["token"]), route)


def docker(*args: str) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def nodes(record: dict) -> list[str]:
    try:
        return sorted(n["node_id"] for n in http(record, "/v1/cluster")["nodes"])
    except OSError:
        return []


def all_nodes_back(record: dict) -> None:
    name = record["name"]
    want = [f"burla-{name}-node-{i}" for i in (1, 2, 3)]
    wait_until(lambda: nodes(record) == want, 60, "all three nodes registered")


def slow(x):
    import time

    time.sleep(0.1)
    return x


@pytest.fixture
def on(dcluster: dict) -> dict:
    all_nodes_back(dcluster)
    burla.connect(dcluster["head"], dcluster["token"])
    wait_until(lambda: all(n["job_id"] is None for n in http(dcluster, "/v1/cluster")["nodes"]), 30, "idle nodes")
    return dcluster


def test_image_runs_burla_and_rebuild_is_cached(image, tmp_path):
    assert docker("run", "--rm", image, "--version").startswith("burla ")
    again = burla_cli("image", "build", env=cli_env(str(tmp_path)))
    assert again.returncode == 0 and again.stdout.strip() == image
    assert "collecting wheels" not in again.stderr and "mmdebstrap" not in again.stderr  # everything cached


def test_status_lists_the_containers(on):
    out = burla_cli("status", "--json", env=on["env"])
    info = json.loads(out.stdout)
    roles = sorted(c["role"] for c in info["resources"])
    assert roles == ["head", "node", "node", "node", "worker", "worker", "worker"]
    assert all(n["provider"] == "docker" for n in info["nodes"])
    ports = docker("port", f"burla-{on['name']}-head")
    assert all(line.split(" -> ")[1].startswith("127.0.0.1:") for line in ports.strip().splitlines())


def test_a_job_runs_across_all_three_nodes(on):
    assert rpm(slow, range(45), spinner=False) == list(range(45))
    job = next(j for j in http(on, "/v1/jobs")["jobs"] if j["function"] == "slow")
    detail = http(on, f"/v1/jobs/{job['job_id']}")
    assert len({i["node"] for i in detail["inputs"]}) == 3


def nested_outer(x):
    from burla import remote_parallel_map

    return sum(remote_parallel_map(slow, [x, x, x], spinner=False))


def test_nested_calls_run_on_the_same_docker_cluster(on):
    # 9 parents hold all 3 nodes' slots while they wait on their children: those run beside them
    assert rpm(nested_outer, range(9), spinner=False) == [3 * x for x in range(9)]


def test_image_parameter_and_missing_image(on):
    assert rpm(abs, [-1, -2], image="burla:0.1.0", spinner=False) == [1, 2]
    with pytest.raises(burla.JobFailed, match=r"'nope:1'.*burla image build"):
        rpm(abs, [-1], image="nope:1", spinner=False)


def test_any_image_with_python_runs_workers(on):
    """A user image needs only Python >= 3.10: burla's worker comes from the node's bundle."""
    base = next(i for i in ("burla-base:bookworm", "python:3.11-slim")
                if subprocess.run(["docker", "image", "inspect", i], capture_output=True).returncode == 0)
    assert subprocess.run(["docker", "run", "--rm", "--entrypoint", "python3", base, "-c", "import burla"],
                          capture_output=True).returncode != 0  # the image really has no burla

    def probe(x):
        import sys

        return x, "msgspec" in sys.modules, sys.prefix

    out = rpm(probe, range(6), image=base, spinner=False)
    assert [o[0] for o in out] == list(range(6))
    assert {o[1] for o in out} == {False} and {o[2] for o in out} != {"/opt/burla"}


def test_image_whose_workers_cannot_start_fails_the_job(on):
    """No hang: workers that die before connecting (here python3 is /bin/false) fail the job."""
    base = "burla-base:bookworm" if _present("burla-base:bookworm") else "python:3.11-slim"
    dockerfile = f"FROM {base}\nRUN ln -sf /bin/false /usr/local/bin/python3\n"
    built = subprocess.run(["docker", "build", "-q", "-t", "burla-test-badpy:1", "-"], input=dockerfile,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    try:
        with pytest.raises(burla.JobFailed, match="exit before connecting"):
            rpm(abs, [-1], image="burla-test-badpy:1", spinner=False)
    finally:
        docker("rmi", "-f", "burla-test-badpy:1")


def _present(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def test_worker_oom_killed_at_its_limit_raises_worker_crashed(on):
    def hog(x):
        block = bytearray(600 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return len(block)

    with pytest.raises(burla.WorkerCrashed, match="OOM-killed at its memory limit of 256 MiB") as info:
        rpm(hog, [1], func_ram=0.25, max_retries=1, spinner=False)
    assert info.value.input_index == 0


def _run_in_thread(fn, n: int) -> tuple[threading.Thread, list]:
    out: list = []

    def run() -> None:
        try:
            out.append(list(rpm(fn, range(n), generator=True, spinner=False)))
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _all_busy(record: dict) -> None:
    wait_until(lambda: all(n["job_id"] for n in http(record, "/v1/cluster")["nodes"]), 30, "every node on the job")


def test_killed_node_container_loses_nothing(on, capfd):
    node = f"burla-{on['name']}-node-3"
    t, out = _run_in_thread(slow, 90)
    _all_busy(on)
    docker("kill", node)
    t.join(120)
    assert sorted(out[0]) == list(range(90))  # every input exactly once
    err = capfd.readouterr().err
    assert f"burla: node {node} was lost" in err and "Traceback" not in err
    docker("start", node)


def test_partitioned_node_is_replaced_and_rejoins_clean(on):
    name = on["name"]
    node = f"burla-{name}-node-2"
    t, out = _run_in_thread(slow, 120)
    _all_busy(on)
    docker("network", "disconnect", f"burla-{name}", node)
    t0 = time.monotonic()
    try:
        wait_until(lambda: node not in nodes(on), 20, "the head to declare the partitioned node lost")
        assert time.monotonic() - t0 < 15
        t.join(120)
        assert sorted(out[0]) == list(range(120))  # no duplicates, nothing lost
    finally:
        docker("network", "connect", f"burla-{name}", node)
    all_nodes_back(on)  # it reconnects by itself and registers clean
    assert rpm(slow, range(30), spinner=False) == list(range(30))


def test_head_killed_then_back_nodes_reconnect(on):
    head = f"burla-{on['name']}-head"
    t, out = _run_in_thread(slow, 200)
    _all_busy(on)
    docker("kill", head)
    t.join(20)
    assert not t.is_alive() and isinstance(out[0], burla.ClusterUnreachable)
    t0 = time.monotonic()
    with pytest.raises(burla.ClusterUnreachable):
        rpm(abs, [1], spinner=False)
    assert time.monotonic() - t0 < 6
    docker("start", head)
    all_nodes_back(on)
    assert rpm(abs, [-7], spinner=False) == [7]


def test_a_crashed_head_container_is_restarted_by_its_policy(on):
    head = f"burla-{on['name']}-head"
    os.kill(int(docker("inspect", "-f", "{{.State.Pid}}", head)), signal.SIGKILL)  # a crash, not a `docker kill`
    wait_until(lambda: docker("inspect", "-f", "{{.RestartCount}} {{.State.Running}}", head).split() == ["1", "true"],
               30, "Docker to restart the head container")
    all_nodes_back(on)
    assert rpm(abs, [-7], spinner=False) == [7]


def test_docker_errors_are_one_clear_message(image, tmp_path):
    env = dict(cli_env(str(tmp_path)), DOCKER_HOST="unix:///nonexistent/docker.sock")
    out = burla_cli("image", "build", env=env)
    assert out.returncode == 1 and "cannot reach the Docker daemon at unix:///nonexistent/docker.sock" in out.stderr
    assert "Traceback" not in out.stderr
    spec = tmp_path / "c.yaml"
    spec.write_text("name: missing\nprovider: {type: docker, image: 'nope:1'}\n")
    out = burla_cli("up", str(spec), env=cli_env(str(tmp_path)))
    assert out.returncode == 1 and "image 'nope:1' is not present" in out.stderr and "burla image build" in out.stderr
    assert docker_objects("missing") == []


def test_permission_error_names_the_fix():
    from burla import ProviderError
    from burla.cloud.docker._client import translated

    with pytest.raises(ProviderError, match=r"no permission .* 'docker' group"), translated():
        raise PermissionError(13, "Permission denied")


def test_local_debian_base_builds_from_nothing(image):
    """The path a machine with no image at all takes (mmdebstrap + docker import)."""
    from burla.cloud.docker._client import client
    from burla.cloud.docker._image import build_local_base, debian_mirror

    assert debian_mirror().startswith("http")
    tag = "burla-test-base:scratch"
    c = client()
    try:
        build_local_base(c, tag)
        out = docker("run", "--rm", tag, "python3", "-c", "import sys, venv; print(sys.version_info >= (3, 10))")
        assert out.strip() == "True"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
        c.close()
