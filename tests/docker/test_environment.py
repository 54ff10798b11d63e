"""A job's environment on a Docker node, against the real engine, the real
package index (through the host's CA bundle) and a real local wheel (issue 12, item 4)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from burla import ProviderError
from burla.client._environment import Requirement, build_wheel
from burla.cloud.docker._client import client
from burla.cloud.docker._environment import container_environments
from tests.client.test_environment import make_project
from tests.client_venv import make_client_venv, run_venv_client
from tests.docker.conftest import docker_cluster


@pytest.fixture
def envs(image, tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    docker = client()
    try:
        yield container_environments(docker, root, {root: {"bind": root, "mode": "rw"}})
    finally:
        docker.close()
        # (files written by the installer belong to the container's root user)
        subprocess.run(["docker", "run", "--rm", "-v", f"{root}:/r", "--entrypoint", "sh", image, "-c",
                        "rm -rf /r/*"], capture_output=True)


def run_in(image, root, env_dir, code):
    return subprocess.run(["docker", "run", "--rm", "-v", f"{root}:{root}", "-e", f"PYTHONPATH={env_dir}",
                           "--entrypoint", "python3", image, "-c", code], capture_output=True, text=True, timeout=120)


def test_missing_distributions_are_installed_once_from_the_index_and_local_wheels(envs, image, tmp_path):
    make_project(tmp_path / "proj", body="X = 'local'\n")
    local = Requirement("mini-thing", "0.3.1", str(tmp_path / "proj"))
    wheel = build_wheel(local, str(tmp_path / "cache"))
    wheels = {os.path.basename(wheel): Path(wheel).read_bytes()}
    have = envs.image_distributions(image)
    assert "six" not in have and "msgspec" in have  # (the worker image has burla's own dependencies)
    reqs = [Requirement("six", "1.16.0"), Requirement("msgspec", have["msgspec"]), local,
            Requirement("burla", "0.1.0", "/src/burla")]  # burla is never installed: the bundle has it
    told: list[str] = []
    env = envs.prepare(image, reqs, wheels, told.append)
    assert told == ["six 1.16.0, mini-thing 0.3.1"]
    got = run_in(image, envs.root, env, "import six, mini; print(six.__version__, mini.X)")
    assert got.stdout.split() == ["1.16.0", "local"], got.stderr
    again: list[str] = []
    assert envs.prepare(image, reqs, wheels, again.append) == env
    assert again == []  # in place: nothing installed, nothing said
    assert envs.prepare(image, [Requirement("msgspec", have["msgspec"])], {}) == ""  # the image has it all


def test_a_package_that_cannot_be_installed_fails_naming_it_with_pips_output(envs, image):
    with pytest.raises(ProviderError, match=r"(?s)installing burla-no-such-package 9\.9\.9 .*failed.*pip said:.*"
                                            r"burla-no-such-package"):
        envs.prepare(image, [Requirement("burla-no-such-package", "9.9.9")], {})
    envs_dir = os.path.join(envs.root, "envs")
    assert not os.path.exists(envs_dir) or not os.listdir(envs_dir)  # no half-built environment left


# --- end to end: a client in a venv of its own, a real Docker cluster ------------------------------

@pytest.fixture(scope="module")
def client_venv(tmp_path_factory):
    return make_client_venv(tmp_path_factory.mktemp("venv"))


def run_client(root, dcluster):
    return run_venv_client(root, dcluster["head"], dcluster["token"], dcluster["env"])


def test_a_job_runs_with_the_clients_packages_installed_once_per_node(client_venv, dcluster):
    out, err = run_client(client_venv, dcluster)
    assert out == [["1.16.0", "local", x] for x in range(12)], err
    what = r"mini-thing 0\.3\.1, six 1\.16\.0"
    assert re.search(rf"burla: installed {what} on [123] nodes? in \d+\.\d+s", err), err
    assert "Traceback" not in err
    # In place on every node that has it: the next job pays nothing, and says nothing.
    out, err = run_client(client_venv, dcluster)
    assert out == [["1.16.0", "local", x] for x in range(12)]
    assert "install" not in err, err
    # An edit to the editable project is a new wheel, installed again.
    make_project(client_venv / "proj", body="X = 'edited'\n")
    out, err = run_client(client_venv, dcluster)
    assert {tuple(r[:2]) for r in out} == {("1.16.0", "edited")}, err
    assert "installed mini-thing 0.3.1, six 1.16.0 on" in err


def test_a_package_the_nodes_cannot_install_fails_the_job_naming_it(client_venv, dcluster, tmp_path):
    # A distribution installed here from a wheel file: the index has no such thing.
    make_project(tmp_path / "ghost")
    toml = tmp_path / "ghost" / "pyproject.toml"
    toml.write_text(toml.read_text().replace("Mini_Thing", "burla-no-such-package").replace("0.3.1", "9.9.9"))
    (tmp_path / "ghost" / "mini").rename(tmp_path / "ghost" / "ghost_mod")
    py = str(client_venv / "v" / "bin" / "python")
    built = subprocess.run([py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"),
                            str(tmp_path / "ghost")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    ghost = next((tmp_path / "w").glob("*.whl"))
    subprocess.run([py, "-m", "pip", "install", "-q", str(ghost)], check=True, capture_output=True, timeout=300)
    try:
        out, _ = run_client(client_venv, dcluster)
    finally:
        subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "burla-no-such-package"], capture_output=True)
    assert out["error"] == "JobFailed", out
    assert re.search(r"(?s)installing burla-no-such-package 9\.9\.9.*failed.*pip said:.*burla-no-such-package",
                     out["message"]), out["message"]
    assert "sync_packages=False" in out["message"]


@pytest.fixture
def wheels_cluster(image, tmp_path):
    """Two Docker nodes that take packages only as wheels from the client (cluster.yaml
    ``packages: client``): their installer containers have no network at all."""
    with docker_cluster(tmp_path, f"tw{os.getpid()}", ", packages: client", 2) as record:
        yield record


def test_nodes_that_reach_no_index_install_the_wheels_the_client_serves(client_venv, wheels_cluster):
    out, err = run_client(client_venv, wheels_cluster)
    assert [r[0] for r in out] == ["1.16.0"] * 12 and {r[1] for r in out} <= {"local", "edited"}, err
    assert re.search(r"burla: installed mini-thing 0\.3\.1, six 1\.16\.0 on [12] nodes? in", err), err
    fetched = list((client_venv / "cache" / "burla" / "local-wheels" / "index").glob("*/*.whl"))
    assert [w.name for w in fetched] == ["six-1.16.0-py2.py3-none-any.whl"]  # (only what the image lacks)
