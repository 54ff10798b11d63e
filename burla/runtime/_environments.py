"""A job's Python environment on a node (issue 12, item 4).

The client's distributions that the workers' Python lacks (absent, or at
another version) are installed with that Python's own pip into
``<root>/envs/<digest>``: a directory the job's workers put first on
``sys.path``.  The digest covers the interpreter (or image), the pins and
the wheels, so an environment is built once per node and a job whose
environment is in place pays nothing.  Local projects come as wheels the
client built (``client._environment.build_wheel``) and are installed from
those files.  ``--no-deps``: the client's environment is pinned whole, as
it is, with no resolver on the node.

With ``wheels_only`` (cluster.yaml ``packages: client``: nodes that cannot
reach a package index), nothing comes from an index: the client ships a
wheel of every distribution the workers lack, and pip installs those files
with ``--no-index``.

Where pip runs is the ``Installer``: the node's own interpreter for worker
processes (``ProcessInstaller``, Compute Engine nodes), a one-off container
of the worker image for worker containers (``cloud/docker/_environment.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Protocol

from .._errors import ProviderError
from ..client._environment import Requirement, canonical, missing_from, shipped
from ..transport.messages import AssignJob

INSTALL_TIMEOUT = 1800.0  # seconds for one environment's pip install
_COMPLETE = ".burla-complete"
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json, re\n"
    "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version"
    " for d in m.distributions() if d.metadata['Name']}))"
)


class Installer(Protocol):
    def identity(self, image: str) -> str:
        """What the workers' Python is exactly (an image's id): environments are per identity."""
        ...

    def python(self, image: str, args: list[str], what: str) -> str:
        """Run the workers' ``python3 <args>`` (with ``root`` visible at the same path); its output,
        or ProviderError with it."""
        ...


class Environments:
    def __init__(self, installer: Installer, root: str, wheels_only: bool = False) -> None:
        self.installer, self.root, self.wheels_only = installer, root, wheels_only
        self._dists: dict[str, dict[str, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def image_distributions(self, image: str) -> dict[str, str]:
        """{canonical name: version} of what the workers' Python has (asked once per identity)."""
        return self._image(image)[1]

    def _image(self, image: str) -> tuple[str, dict[str, str]]:
        ident = self.installer.identity(image)
        if ident not in self._dists:
            out = self.installer.python(image, ["-c", LIST_DISTRIBUTIONS], f"listing the distributions of {image}")
            self._dists[ident] = json.loads(out.strip().splitlines()[-1])
        return ident, self._dists[ident]

    def prepare(self, image: str, reqs: list[Requirement], wheels: dict[str, bytes],
                on_progress: Callable[[str], None] = lambda text: None) -> str:
        """The environment directory for ``reqs`` (installed now if it is not yet; ``on_progress``
        says what first), or "" when the workers have everything.  Raises ProviderError with pip's output."""
        ident, have = self._image(image)
        needed = [r for r in missing_from(reqs, have) if shipped(r)]
        if not needed:
            return ""
        digest = _digest(image, ident, needed, wheels)
        env = os.path.join(self.root, "envs", digest)
        with self._lock(digest):
            if os.path.exists(os.path.join(env, _COMPLETE)):
                return env
            on_progress(describe(needed))
            shutil.rmtree(env, ignore_errors=True)  # a partial one from an install that died
            wheel_dir = os.path.join(self.root, "wheels", digest)
            os.makedirs(wheel_dir, exist_ok=True)
            try:
                self._install(image, env, wheel_dir, needed, wheels)
            except ProviderError as e:
                shutil.rmtree(env, ignore_errors=True)
                raise ProviderError(f"{e}\n(install what cannot be installed in the workers' image, or uninstall it "
                                    "on the client; sync_packages=False runs the job with the image's packages "
                                    "only)") from None
            finally:
                shutil.rmtree(wheel_dir, ignore_errors=True)
            with open(os.path.join(env, _COMPLETE), "w") as f:
                f.write("\n".join(r.pin for r in needed) + "\n")
            return env

    def _install(self, image: str, env: str, wheel_dir: str, needed: list[Requirement],
                 wheels: dict[str, bytes]) -> None:
        local: dict[str, str] = {}  # project -> its wheel's path (never the index's namesake)
        for filename, blob in wheels.items():
            path = os.path.join(wheel_dir, os.path.basename(filename))
            with open(path, "wb") as f:
                f.write(blob)
            local[canonical(os.path.basename(filename).split("-", 1)[0])] = path
        unshipped = [r.pin for r in needed if (r.local_path or self.wheels_only) and r.name not in local]
        if unshipped:
            why = ("this cluster's nodes install only the wheels the client ships (packages: client)"
                   if self.wheels_only else "a local project comes as a wheel from the client")
            raise ProviderError(f"{', '.join(unshipped)} came without a wheel, and {why}")
        args = ["-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
                "--no-deps", *(["--no-index"] if self.wheels_only else []), "--target", env,
                *(local.get(r.name, r.pin) for r in needed)]
        self.installer.python(image, args, "installing " + describe(needed))

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())


def requirements(assign: AssignJob) -> list[Requirement]:
    """The job's distributions as ``prepare`` takes them (a local one: installed from its wheel)."""
    return [Requirement(d.name, d.version, "(a wheel from the client)" if d.local else "") for d in assign.requirements]


class ProcessInstaller:
    """pip of the node's own interpreter: worker processes run on it (it ignores ``image``)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.executable = python

    def identity(self, image: str) -> str:
        return self.executable

    def python(self, image: str, args: list[str], what: str) -> str:
        try:
            done = subprocess.run([self.executable, *args], check=False, capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"{what} on this node took over {INSTALL_TIMEOUT:g}s") from None
        return checked(what, done.returncode, done.stdout + done.stderr)


def checked(what: str, code: int | None, out: str) -> str:
    """``out``, or the ProviderError of a failed (or, ``code`` None, timed out) run with its tail."""
    if code != 0:
        tail = "\n".join(out.strip().splitlines()[-25:])
        why = f"took over {INSTALL_TIMEOUT:g}s" if code is None else f"failed (exit {code})"
        raise ProviderError(f"{what} on this node {why}; pip said:\n{tail}")
    return out


def describe(reqs: list[Requirement]) -> str:
    names = [f"{r.name} {r.version}" for r in reqs[:3]]
    more = f" and {len(reqs) - 3} more" if len(reqs) > 3 else ""
    return ", ".join(names) + more


def _digest(image: str, ident: str, reqs: list[Requirement], wheels: dict[str, bytes]) -> str:
    h = hashlib.sha256(f"{image}\0{ident}\n".encode())
    for r in sorted(reqs, key=lambda r: r.name):
        h.update(f"{r.pin}\n".encode())
    for filename in sorted(wheels):
        h.update(f"{filename}\0{hashlib.sha256(wheels[filename]).hexdigest()}\n".encode())
    return h.hexdigest()[:20]
