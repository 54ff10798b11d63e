"""The client's Python environment, as the workers need to reproduce it (issue 12, item 4).

``installed()`` lists the distributions this interpreter has, each with its
version and, for a project installed from a local directory (editable or
not), that directory.  ``missing_from(reqs, image)`` is what a worker image
lacks (absent, or at another version).  ``build_wheel(req, cache)`` builds a
local project into a wheel here, once per state of its files: index packages
are installed on the nodes by name and version, local ones from the wheel the
client ships.

``job_environment()`` is what a job carries to a cluster whose nodes
install environments (``Welcome.environments``): every distribution here as
a ``Dist``, and the wheels of the local ones; computed once per state of
``sys.path``.  The nodes' half is ``runtime/_environments.py``.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from .._errors import ConfigError
from ..transport.messages import Dist

WHEEL_TIMEOUT = 600.0  # seconds to build one local project's wheel
# Never shipped: burla (the workers run the cluster's own), the installer's tools, and what only
# exists on the client's platform (as Burla does).
NOT_SHIPPED = frozenset({"burla", "pip", "setuptools", "wheel", "distribute", "pkg-resources", "pywin32",
                         "pywinpty", "pypiwin32", "appnope"})
_NOT_SHIPPED_PREFIXES = ("pyobjc",)
_SKIPPED_DIRS = {".git", "__pycache__", "build", "dist", ".venv", ".tox", ".mypy_cache", ".pytest_cache"}


@dataclass(frozen=True)
class Requirement:
    name: str  # canonical (PEP 503): lower case, runs of -_. as one -
    version: str
    local_path: str = ""  # the project directory it was installed from, if local ("" for an index package)

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(path: list[str] | None = None) -> list[Requirement]:
    """The distributions on ``path`` (default: ``sys.path``), one per name (the first, as import finds it)."""
    seen: dict[str, Requirement] = {}
    for dist in importlib.metadata.distributions(path=sys.path if path is None else path):
        name = dist.metadata["Name"]
        if not name or canonical(name) in seen:
            continue
        seen[canonical(name)] = Requirement(canonical(name), dist.version, _local_path(dist))
    return sorted(seen.values(), key=lambda r: r.name)


def _local_path(dist: importlib.metadata.Distribution) -> str:
    """The directory of a project installed from a local path (PEP 610's direct_url.json), else ""."""
    text = dist.read_text("direct_url.json")
    if not text:  # metadata in a source tree (``pip install -e`` of old, ``setup.py develop``): that tree
        where = str(dist.locate_file(""))
        local = any(os.path.exists(os.path.join(where, f)) for f in ("pyproject.toml", "setup.py"))
        return os.path.abspath(where) if local else ""
    try:
        info = json.loads(text)
    except ValueError:
        return ""
    url = urlparse(str(info.get("url", "")))
    if url.scheme != "file" or "dir_info" not in info:
        return ""  # a wheel or archive file, or a VCS checkout: not a project directory
    return unquote(url.path)


def missing_from(reqs: Iterable[Requirement], image: dict[str, str]) -> list[Requirement]:
    """What a worker image with ``image`` ({canonical name: version}) lacks:
    distributions it does not have, or has at another version; local projects always."""
    return [r for r in reqs if r.local_path or image.get(r.name) != r.version]


def build_wheel(req: Requirement, cache: str) -> str:
    """The wheel of a local project, built once per state of its files (cached in ``cache``)."""
    if not req.local_path or not os.path.isdir(req.local_path):
        raise ConfigError(f"{req.name} {req.version} was installed from {req.local_path or 'an index'}, "
                          "which is not a project directory here: reinstall it, or install it on the nodes' image")
    out = os.path.join(cache, f"{req.name}-{_fingerprint(req.local_path)}")
    wheel, said = _pip_wheel(out, ["wheel", "-w", out, req.local_path],
                             what=f"building a wheel of the local project {req.name} ({req.local_path})")
    if wheel is None:
        raise ConfigError(f"could not build a wheel of the local project {req.name} ({req.local_path}) to ship "
                          f"to the workers; pip wheel said:\n{_tail(said, 20)}")
    return wheel


def _pip_wheel(out: str, *attempts: list[str], what: str = "") -> tuple[str | None, str]:
    """The wheel in ``out``: there already, or made by the first pip command of ``attempts`` (each
    ``--no-deps``) that leaves one there; else None and the last command's output."""
    wheels = glob.glob(os.path.join(out, "*.whl"))
    if wheels:
        return wheels[0], ""
    os.makedirs(out, exist_ok=True)
    said = ""
    for args in attempts:
        try:
            done = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--quiet"], check=False,
                                  capture_output=True, text=True, timeout=WHEEL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{what} took over {WHEEL_TIMEOUT:g}s") from None
        wheels = glob.glob(os.path.join(out, "*.whl"))
        if done.returncode == 0 and wheels:
            return wheels[0], ""
        said = done.stdout + done.stderr
    return None, said


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _fingerprint(root: str) -> str:
    """A digest of the project's files (paths, sizes, mtimes): a changed file means a new wheel."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{rel}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def shipped(req: Requirement) -> bool:
    return req.name not in NOT_SHIPPED and not req.name.startswith(_NOT_SHIPPED_PREFIXES)


def index_version(version: str) -> str:
    """The version to ask the index for: a local segment (``2.1.0+cu121``) names a build of another index."""
    return version.split("+", 1)[0]


def wheel_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return os.path.join(base, "burla", "local-wheels")


_scanned: tuple[object, list[Requirement]] | None = None
_wheel_bytes: dict[str, bytes] = {}
_cache_lock = threading.Lock()


def job_environment(wheels_for: dict[str, str] | None = None) -> tuple[list[Dist], dict[str, bytes]]:
    """This interpreter's distributions as a job carries them, and the wheels of the local ones.
    ``sys.path`` is scanned again only when it or one of its directories changed (an install);
    a local project's wheel is rebuilt only when its files changed.  ``wheels_for``: the nodes
    take only wheels from here, and their workers have these {name: version}: every
    distribution they lack comes as a wheel too (fetched once with this machine's pip)."""
    global _scanned  # noqa: PLW0603 (a cache of the scan, process-wide by nature)
    with _cache_lock:
        key = _path_state()
        if _scanned is None or _scanned[0] != key:
            _scanned = (key, [r for r in installed() if shipped(r)])
        dists: list[Dist] = []
        wheels: dict[str, bytes] = {}
        for req in _scanned[1]:
            if req.local_path:
                _ship(build_wheel(req, wheel_cache()), wheels)
                dists.append(Dist(req.name, req.version, local=True))
            else:
                dist = Dist(req.name, index_version(req.version))
                dists.append(dist)
                if wheels_for is not None and wheels_for.get(dist.name) != dist.version:
                    _ship(index_wheel(dist.name, dist.version, wheel_cache()), wheels)
        return dists, wheels


def _ship(wheel: str, wheels: dict[str, bytes]) -> None:
    """Add ``wheel``'s file to what a job carries (read once per process: its path names its contents)."""
    if wheel not in _wheel_bytes:
        _wheel_bytes[wheel] = Path(wheel).read_bytes()
    wheels[os.path.basename(wheel)] = _wheel_bytes[wheel]


def index_wheel(name: str, version: str, cache: str) -> str:
    """A wheel of ``name==version`` from the package index (as this machine's pip reaches it),
    downloaded, or built from its sdist, once."""
    out = os.path.join(cache, "index", f"{name}-{version}")
    pin = f"{name}=={version}"
    wheel, said = _pip_wheel(out, ["download", "--only-binary=:all:", "--dest", out, pin], ["wheel", "-w", out, pin],
                             what=f"fetching a wheel of {name} {version} for the nodes")
    if wheel is None:
        raise ConfigError(f"this cluster's nodes install only wheels this machine ships (packages: client), and pip "
                          f"found no wheel of {name} {version}; pip said:\n{_tail(said, 15)}\n(install it in the "
                          "worker image, or pass sync_packages=False)")
    return wheel


def _path_state() -> tuple[tuple[str, int], ...]:
    out = []
    for entry in sys.path:
        try:
            out.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            out.append((entry, 0))
    return tuple(out)
