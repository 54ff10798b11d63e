"""A job's environment on a node whose workers are processes of its own interpreter (Compute
Engine nodes): real pip, the real package index, a real local wheel, a real node daemon (issue 12,
item 4)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from burla import ProviderError
from burla.client._environment import Requirement, build_wheel
from burla.runtime._environments import Environments, ProcessInstaller
from tests.client.test_environment import make_project
from tests.client_venv import make_client_venv, run_venv_client
from tests.conftest import ROOT, wait_for_nodes


def test_the_nodes_interpreter_gets_what_it_lacks_once_and_a_failure_names_the_package(tmp_path):
    envs = Environments(ProcessInstaller(), str(tmp_path / "root"))
    assert envs.image_distributions("")["six"] != "1.16.0"  # (this interpreter has another six)
    make_project(tmp_path / "proj", body="X = 'local'\n")
    local = Requirement("mini-thing", "0.3.1", str(tmp_path / "proj"))
    wheel = build_wheel(local, str(tmp_path / "cache"))
    wheels = {os.path.basename(wheel): Path(wheel).read_bytes()}
    told: list[str] = []
    env = envs.prepare("", [local, Requirement("six", "1.16.0"), Requirement("pip", "1.0")], wheels, told.append)
    assert told == ["mini-thing 0.3.1, six 1.16.0"]  # (pip is never installed)
    got = subprocess.run([sys.executable, "-c", "import six, mini; print(six.__version__, mini.X)"],
                         env=dict(os.environ, PYTHONPATH=env), capture_output=True, text=True, timeout=60)
    assert got.stdout.split() == ["1.16.0", "local"], got.stderr
    assert envs.prepare("", [local, Requirement("six", "1.16.0")], wheels, told.append) == env
    assert told == ["mini-thing 0.3.1, six 1.16.0"]  # in place: nothing installed, nothing said
    with pytest.raises(ProviderError, match=r"(?s)installing burla-no-such-package 9\.9\.9 on this node failed.*"
                                            r"pip said:.*burla-no-such-package.*sync_packages=False"):
        envs.prepare("", [Requirement("burla-no-such-package", "9.9.9")], {})


def test_a_process_node_with_environments_runs_the_clients_packages(tmp_path, clusters):
    cluster = clusters.start(nodes=0, wait=False)
    venv = make_client_venv(tmp_path / "client")
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 (closed below, after the node)
    node = subprocess.Popen([sys.executable, "-m", "burla", "node", "--head", cluster.record.head, "--workers", "2",
                             "--node-id", "gce-like", "--environments", str(tmp_path / "envs")],
                            env=dict(os.environ, PYTHONPATH=ROOT, BURLA_TOKEN=cluster.record.token),
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_for_nodes(cluster, 1)
        env = dict(os.environ)
        out, err = run_venv_client(venv, cluster.record.head, cluster.record.token, env)
        assert out == [["1.16.0", "local", x] for x in range(12)], err
        # (what this interpreter has at other versions than the client's venv comes too: idna, pygments...)
        assert re.search(r"burla: installed \S.*mini-thing 0\.3\.1.* on 1 node in \d+\.\d+s", err), err
        out, err = run_venv_client(venv, cluster.record.head, cluster.record.token, env)
        assert out == [["1.16.0", "local", x] for x in range(12)] and "install" not in err, err
    finally:
        node.kill()
        node.wait(10)
        log.close()
