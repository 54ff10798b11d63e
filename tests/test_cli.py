"""The burla command: up / status / down / --version, and cluster.yaml errors."""

import json
import os
import stat
import subprocess
import sys

import psutil
import pytest

from burla.cli._spec import ClusterSpec
from burla import ConfigError
from burla.cloud import stop_pids

from .conftest import ROOT


def burla_cli(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "burla", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def cli_env(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("BURLA_HEAD", None)
    env.pop("BURLA_TOKEN", None)
    yield env
    for path in (tmp_path / "cfg" / "clusters").glob("*.json"):  # whatever a failed test left running
        stop_pids(json.loads(path.read_text()).get("pids", []))


def test_version(cli_env):
    out = burla_cli("--version", env=cli_env)
    assert out.returncode == 0 and out.stdout.startswith("burla ")


def test_up_status_map_down(tmp_path, cli_env):
    spec = tmp_path / "cluster.yaml"
    spec.write_text("name: demo\nprovider: {type: local}\nnodes: 2\nworkers_per_node: 1\n")
    up = burla_cli("up", str(spec), env=cli_env)
    assert up.returncode == 0, up.stderr
    record_path = tmp_path / "cfg" / "clusters" / "demo.json"
    record = json.loads(record_path.read_text())
    assert {"name", "head", "http", "token"} <= set(record)
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600

    status = burla_cli("status", "--json", env=cli_env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["head"] == record["head"] and len(info["nodes"]) == 2 and info["workers"] == 2
    assert burla_cli("status", env=cli_env).stdout.startswith("cluster 'demo'")

    # a later script finds the recorded cluster by itself
    code = "import burla, os\nprint(sorted(set(burla.remote_parallel_map(lambda x: os.getppid(), range(40), spinner=False))))"
    ran = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert len(json.loads(ran.stdout)) == 2  # both nodes worked on it

    down = burla_cli("down", env=cli_env)
    assert down.returncode == 0, down.stderr
    assert not record_path.exists()
    for pid in record["pids"]:
        assert not _running(pid)
    assert burla_cli("status", env=cli_env).returncode == 1


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_up_rejects_unknown_key_by_name(tmp_path, cli_env):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nnodez: 2\n")
    out = burla_cli("up", str(spec), env=cli_env)
    assert out.returncode == 2 and "unknown key 'nodez'" in out.stderr


@pytest.mark.parametrize("text, message", [
    ("nodes: two\n", "'nodes' must be an integer"),
    ("provider: {type: aws}\n", "provider type 'aws' is not supported"),
    ("workers_per_node: 0\n", "'workers_per_node' must be an integer >= 1"),
    ("- a\n- b\n", "must be a mapping"),
    ("name: [x\n", "not valid YAML"),
])
def test_cluster_yaml_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        ClusterSpec.from_yaml_text(text)


def test_down_without_cluster_says_so(cli_env):
    out = burla_cli("down", env=cli_env)
    assert out.returncode == 1 and "no cluster" in out.stderr


def test_exported_names():
    import burla

    assert sorted(burla.__all__) == sorted([
        "AuthenticationError", "BurlaError", "CallTimeout", "ClusterUnreachable", "ConfigError", "ConnectionLost",
        "FunctionLoadError", "InputTooBig", "JobCanceled", "JobFailed", "NoCompatibleNodes", "ProtocolError", "ProviderError",
        "RemoteError", "SerializationError", "WorkerCrashed", "__version__", "connect", "remote_parallel_map",
        "shutdown",
    ])
    for name in burla.__all__:
        assert hasattr(burla, name)
