"""``burla image build``: the node/worker image, built with no registry.

1. The base image (default ``python:3.11-slim``) is used if present, pulled
   if a registry answers; otherwise a local Debian base is made with
   mmdebstrap from the mirror in this machine's apt sources and imported.
2. burla's dependencies are turned into wheels on the host (cached per
   Python version and requirement set); burla itself into a fresh wheel.
3. ``docker build`` with ``--no-index`` inside.  Dependencies and burla are
   separate layers, so a rebuild after a code change takes seconds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._errors import ProviderError
from ..._version import __version__
from .._wheel import build_wheel
from ._client import client, translated

DEFAULT_BASE = "python:3.11-slim"
LOCAL_BASE = "burla-base:bookworm"
IMAGE = f"burla:{__version__}"
_HERE = Path(__file__).parent


def build_image(base: str | None = None, tag: str = IMAGE, log: Callable[[str], None] = print) -> str:
    """Build the image; returns its tag.  Raises ProviderError with the fix."""
    c = client()
    base_image = _resolve_base(c, base, log)
    py = _python_version(c, base_image)
    with tempfile.TemporaryDirectory(prefix="burla-image-") as ctx:
        shutil.copy(_HERE / "Dockerfile", ctx)
        _copy_wheels(_dependency_wheels(py, log), Path(ctx) / "deps")
        build_wheel(Path(ctx) / "burla")
        log(f"building {tag} on {base_image} (Python {py})")
        with translated("docker build"):
            image, _ = c.images.build(path=ctx, tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True, forcerm=True)
    if tag == IMAGE:
        image.tag("burla", "latest")
    return tag


def image_present(c: Any, name: str) -> bool:
    import docker.errors

    try:
        c.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def _resolve_base(c: Any, base: str | None, log: Callable[[str], None]) -> str:
    import docker.errors

    wanted = base or DEFAULT_BASE
    if image_present(c, wanted):
        return wanted
    try:
        c.images.pull(wanted)
        return wanted
    except docker.errors.APIError as e:
        if base is not None:
            raise ProviderError(
                f"base image {base!r} is not present and cannot be pulled ({str(e.explanation)[:120]}): "
                f"`docker load` it first, or leave out --base to build on a local Debian base"
            ) from None
    if not image_present(c, LOCAL_BASE):
        log(f"{wanted} cannot be pulled here: building a local Debian base {LOCAL_BASE} with mmdebstrap")
        build_local_base(c)
    return LOCAL_BASE


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (never hard-coded)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and "security" not in suites.group(1).split()[0]:
                    return uris.group(1)
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and "security" not in m.group(2) and "debian" in m.group(1):
                    return m.group(1)
    raise ProviderError("no Debian mirror in /etc/apt/sources.list*: cannot build a local base image; "
                        "pass --base with an image you have (`docker images`)")


def build_local_base(c: Any, tag: str = LOCAL_BASE) -> None:
    """A minimal Debian bookworm with python3 + venv, made with mmdebstrap from
    this machine's mirror and imported as ``tag`` (no registry involved)."""
    _import_debian(c, tag, "python3,python3-venv,ca-certificates", ['CMD ["python3"]'],
                   "building a local Debian base needs mmdebstrap: apt-get install mmdebstrap "
                   "(or pass --base with an image you already have)")


def _import_debian(c: Any, tag: str, packages: str, changes: list[str], no_tool: str) -> None:
    """Debian bookworm with ``packages``, made by mmdebstrap from this machine's mirror and
    imported as ``tag`` with the Dockerfile ``changes``; ``no_tool``: the error without mmdebstrap."""
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise ProviderError(no_tool)
    cmd = [tool, "--variant=minbase", f"--include={packages}", "--format=tar", "bookworm", "-", debian_mirror()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        repo, version = tag.split(":")
        with translated("docker import"):
            c.api.import_image_from_stream(proc.stdout, repository=repo, tag=version, changes=changes)
    finally:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise ProviderError(f"mmdebstrap failed (exit {proc.returncode}): {err.decode(errors='replace')[-500:]}")


REDIS_IMAGE = "burla-redis:bookworm"


def ensure_redis_image(c: Any, log: Callable[[str], None] = print) -> str:
    """Debian's redis-server as an image, made with mmdebstrap like the local base (no registry)."""
    if image_present(c, REDIS_IMAGE):
        return REDIS_IMAGE
    log(f"building {REDIS_IMAGE} (Debian's redis-server) with mmdebstrap")
    _import_debian(c, REDIS_IMAGE, "redis-server",
                   ['CMD ["redis-server", "--protected-mode", "no", "--dir", "/data", "--appendonly", "yes", '
                    '"--save", ""]'],
                   "a Docker cluster's own Redis is built with mmdebstrap: apt-get install mmdebstrap, "
                   "or give queue: {type: redis, url: redis://HOST:PORT/DB}")
    return REDIS_IMAGE


def _python_version(c: Any, image: str) -> str:
    with translated(f"checking Python in {image}"):
        out = c.containers.run(image, ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               entrypoint="python3", remove=True)
    version: str = out.decode().strip()
    if tuple(int(x) for x in version.split(".")) < (3, 10):
        raise ProviderError(f"{image} has Python {version}; burla needs Python >= 3.10")
    return version


def _requirements() -> list[str]:
    reqs = [r for r in importlib.metadata.requires("burla") or [] if "extra ==" not in r]
    # + a head's Redis client, and what redis needs below Python 3.11.3 (Debian 12 has 3.11.2): the
    # wheels are collected by this interpreter, whose markers would leave it out
    extra = {"docker>=6", "redis>=5", "async-timeout>=4.0.3"}
    return sorted({*(r.split(";")[0].strip() for r in reqs), *extra})


def _dependency_wheels(py: str, log: Callable[[str], None]) -> Path:
    reqs = _requirements()
    key = hashlib.sha256(("\n".join(reqs) + py).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "burla" / "wheels" / f"py{py}-{key}"
    if (cache / "complete").exists():
        return cache
    log(f"collecting wheels for Python {py} in {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    if py == "{}.{}".format(*sys.version_info[:2]):
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(cache), *reqs]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", py,
               "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux2014_x86_64", "--dest", str(cache), *reqs]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise ProviderError(f"could not collect wheels for Python {py}: {result.stderr.strip()[-500:]}")
    (cache / "complete").write_text("\n".join(reqs))
    return cache


def _copy_wheels(src: Path, dest: Path) -> None:
    dest.mkdir()
    for whl in src.glob("*.whl"):
        try:
            os.link(whl, dest / whl.name)
        except OSError:
            shutil.copy(whl, dest / whl.name)
