"""A job's environment on a Docker node, against the real engine, the real
package index (through the host's CA bundle) and a real local wheel (issue 12, item 4)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from burla import ProviderError
from burla.client._environment import Requirement, build_wheel
from burla.cloud.docker._client import client
from burla.cloud.docker._environment import Environments
from tests.client.test_environment import make_project


@pytest.fixture
def envs(image, tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    docker = client()
    try:
        yield Environments(docker, root, {root: {"bind": root, "mode": "rw"}})
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
    assert told == ["installing six 1.16.0, mini-thing 0.3.1"]
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
