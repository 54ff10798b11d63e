"""A client in a virtual environment of its own, as a user has one: burla, one index package that
neither the worker image nor this interpreter has at that version (six 1.16.0), and a local project
installed editable (mini-thing).  For the tests of jobs that carry their environment (issue 12, item 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.client.test_environment import make_project

CLIENT = """
import json, sys, burla
burla.connect(sys.argv[1], sys.argv[2])

def f(x):
    import six, mini
    return six.__version__, mini.X, x

try:
    print(json.dumps(burla.remote_parallel_map(f, list(range(12)), spinner=False)))
except burla.BurlaError as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


def make_client_venv(root: Path) -> Path:
    from burla.cloud._wheel import build_wheel as burla_wheel
    from burla.cloud.docker._image import _dependency_wheels

    make_project(root / "proj", body="X = 'local'\n")
    py = str(root / "v" / "bin" / "python")
    deps = _dependency_wheels("{}.{}".format(*sys.version_info[:2]), lambda text: None)
    wheel = burla_wheel(root / "burla-wheel")
    for cmd in ([sys.executable, "-m", "venv", str(root / "v")],
                [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(deps), str(wheel)],
                [py, "-m", "pip", "install", "-q", "six==1.16.0"],
                [py, "-m", "pip", "install", "-q", "-e", str(root / "proj")]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    (root / "client.py").write_text(CLIENT)
    return root


def run_venv_client(root: Path, head: str, token: str, env: dict[str, str]) -> tuple[object, str]:
    """Run the venv's client against ``head``: (what it printed, decoded; its stderr)."""
    env = dict(env, XDG_CACHE_HOME=str(root / "cache"))
    env.pop("PYTHONPATH", None)
    env.pop("BURLA_SYNC_PACKAGES", None)  # (the suite turns syncing off for every other test)
    done = subprocess.run([str(root / "v" / "bin" / "python"), str(root / "client.py"), head, token],
                          capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr
