"""Docker tests run against the real engine.  Without one they are skipped,
unless BURLA_REQUIRE_DOCKER=1 (set by .ci/run where a daemon exists): then
they fail, so CI cannot go green by skipping them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import ROOT


def cli_env(config_dir: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT, BURLA_CONFIG_DIR=config_dir)
    env.pop("BURLA_HEAD", None)
    env.pop("BURLA_TOKEN", None)
    return env


def burla_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "burla", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def docker_objects(cluster: str) -> list[str]:
    out = []
    for kind in ("ps -a", "network ls", "volume ls"):
        res = subprocess.run(["docker", *kind.split(), "-q", "--filter", f"label=burla.cluster={cluster}"],
                             capture_output=True, text=True)
        out += res.stdout.split()
    return out


@pytest.fixture(scope="session")
def docker_engine() -> None:
    from burla import ProviderError
    from burla.cloud.docker._client import client

    try:
        client().close()
    except ProviderError as e:
        if os.environ.get("BURLA_REQUIRE_DOCKER") == "1":
            pytest.fail(f"BURLA_REQUIRE_DOCKER=1 but Docker is unusable: {e}")
        pytest.skip(f"no usable Docker engine: {e}")


@pytest.fixture(scope="session")
def image(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """burla's image, built offline (from nothing on a fresh machine)."""
    if shutil.which("mmdebstrap") is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "mmdebstrap"], capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=900)
    env = cli_env(str(tmp_path_factory.mktemp("imgcfg")))
    built = burla_cli("image", "build", env=env, timeout=1200)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip()


@contextlib.contextmanager
def docker_cluster(cfg: Path, name: str, provider: str, nodes: int, extra: str = "") -> Iterator[dict]:
    """``burla up`` of a Docker cluster (``provider``: the cluster.yaml mapping's keys after
    ``type: docker``; 1 worker container per node; ``extra``: more cluster.yaml lines): its
    record, with the CLI's env; then ``down``."""
    spec = cfg / "cluster.yaml"
    spec.write_text(f"name: {name}\nprovider: {{type: docker{provider}}}\nnodes: {nodes}\nworkers_per_node: 1\n{extra}")
    env = cli_env(str(cfg))
    up = burla_cli("up", str(spec), env=env)
    try:
        assert up.returncode == 0, up.stderr
        record = json.loads((cfg / "clusters" / f"{name}.json").read_text())
        record["env"] = env
        yield record
    finally:
        import burla

        burla.shutdown()
        burla_cli("down", name, env=env)
        assert docker_objects(name) == [], "burla down left Docker objects behind"


@pytest.fixture(scope="module")
def dcluster(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A 3-node Docker cluster (1 worker container per node), removed afterwards."""
    with docker_cluster(tmp_path_factory.mktemp("dcfg"), f"t{os.getpid()}", "", 3) as record:
        yield record
