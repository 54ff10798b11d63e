"""A job's Python environment on a Docker node (issue 12, item 4).

The client's distributions that the worker image lacks (absent, or at
another version) are installed with the image's own pip, in a one-off
container of that image, into ``<root>/envs/<digest>``: a directory the
job's workers put on ``sys.path``.  The digest covers the image, the pins
and the wheels, so an environment is built once per node and a job whose
environment is in place pays nothing.  Local projects come as wheels the
client built (``client._environment.build_wheel``), installed from
``<root>/wheels/<digest>``.  The installer trusts the host's CA bundle
(mounted read-only, pip pointed at it), as behind a corporate proxy.

``root`` is a directory the node sees at the same path as its containers
do (the node's status volume, or a bind mount).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

from ..._errors import ProviderError
from ...client._environment import Requirement, canonical, missing_from, shipped
from ._client import translated

INSTALL_TIMEOUT = 1800.0  # seconds for one environment's pip install
_COMPLETE = ".burla-complete"
_LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, json, re\n"
    "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version"
    " for d in m.distributions() if d.metadata['Name']}))"
)


class Environments:
    def __init__(self, docker: Any, root: str, volumes: dict[str, dict[str, str]],
                 ca_bundle: str | None = "/etc/ssl/certs", network: str | None = None) -> None:
        self.docker, self.root, self.volumes = docker, root, volumes
        self.ca_bundle, self.network = ca_bundle, network
        self._image_dists: dict[str, dict[str, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def image_distributions(self, image: str) -> dict[str, str]:
        """{canonical name: version} of what ``image`` has installed (asked once per image)."""
        return self._image(image)[1]

    def _image(self, image: str) -> tuple[str, dict[str, str]]:
        """``image``'s id and distributions."""
        with translated(f"worker image {image!r} on this node"):
            image_id: str = self.docker.images.get(image).id
        if image_id not in self._image_dists:
            out = self._run(image, ["-c", _LIST_DISTRIBUTIONS], f"listing the distributions of {image}")
            self._image_dists[image_id] = json.loads(out.strip().splitlines()[-1])
        return image_id, self._image_dists[image_id]

    def prepare(self, image: str, reqs: list[Requirement], wheels: dict[str, bytes],
                on_progress: Callable[[str], None] = lambda text: None) -> str:
        """The environment directory for ``reqs`` on ``image`` (installed now if it is not
        yet), or "" when the image has everything.  Raises ProviderError with pip's output."""
        image_id, have = self._image(image)
        needed = [r for r in missing_from(reqs, have) if shipped(r)]
        if not needed:
            return ""
        digest = _digest(image, image_id, needed, wheels)
        env = os.path.join(self.root, "envs", digest)
        with self._lock(digest):
            if os.path.exists(os.path.join(env, _COMPLETE)):
                return env
            on_progress(_describe(needed))
            shutil.rmtree(env, ignore_errors=True)  # a partial one from an install that died
            wheel_dir = os.path.join(self.root, "wheels", digest)
            os.makedirs(wheel_dir, exist_ok=True)
            local: dict[str, str] = {}  # project -> its wheel's path (never the index's namesake)
            for filename, blob in wheels.items():
                path = os.path.join(wheel_dir, os.path.basename(filename))
                with open(path, "wb") as f:
                    f.write(blob)
                local[canonical(os.path.basename(filename).split("-", 1)[0])] = path
            unshipped = [r.name for r in needed if r.local_path and r.name not in local]
            if unshipped:
                raise ProviderError(f"the local project(s) {', '.join(unshipped)} came without their wheel")
            # --no-deps: the client's environment pinned whole, as it is (no resolver on the node).
            args = ["-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
                    "--no-deps", "--target", env, *(local.get(r.name, r.pin) if r.local_path else r.pin
                                                     for r in needed)]
            try:
                self._run(image, args, "installing " + _describe(needed))
            except ProviderError as e:
                shutil.rmtree(env, ignore_errors=True)
                raise ProviderError(f"{e}\n(install what cannot be installed in the worker image, or uninstall it "
                                    "here; sync_packages=False runs the job with the image's packages only)") from None
            finally:
                shutil.rmtree(wheel_dir, ignore_errors=True)
            with open(os.path.join(env, _COMPLETE), "w") as f:
                f.write("\n".join(r.pin for r in needed) + "\n")
            return env

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    def _run(self, image: str, args: list[str], what: str) -> str:
        """Run ``python3 <args>`` in a one-off container of ``image``; its output, or ProviderError with it."""
        volumes = dict(self.volumes)
        env = {"PIP_NO_CACHE_DIR": "1"}
        if self.ca_bundle:
            volumes[self.ca_bundle] = {"bind": "/etc/ssl/certs", "mode": "ro"}
            env["PIP_CERT"] = env["SSL_CERT_FILE"] = "/etc/ssl/certs/ca-certificates.crt"
        with translated(what):
            container = self.docker.containers.run(image, args, entrypoint=["python3"], detach=True,
                                                   volumes=volumes, environment=env, network=self.network,
                                                   labels={"burla.role": "installer"})
        try:
            try:
                code = container.wait(timeout=INSTALL_TIMEOUT).get("StatusCode", -1)
            except Exception:
                code = None
            out: str = container.logs(stdout=True, stderr=True).decode(errors="replace")
        finally:
            try:
                container.remove(force=True)
            except Exception:
                pass
        if code != 0:
            tail = "\n".join(out.strip().splitlines()[-25:])
            why = f"took over {INSTALL_TIMEOUT:g}s" if code is None else f"failed (exit {code})"
            raise ProviderError(f"{what} on this node {why}; pip said:\n{tail}")
        return out


def _describe(reqs: list[Requirement]) -> str:
    names = [f"{r.name} {r.version}" for r in reqs[:3]]
    more = f" and {len(reqs) - 3} more" if len(reqs) > 3 else ""
    return ", ".join(names) + more


def _digest(image: str, image_id: str, reqs: list[Requirement], wheels: dict[str, bytes]) -> str:
    h = hashlib.sha256(f"{image}\0{image_id}\n".encode())
    for r in sorted(reqs, key=lambda r: r.name):
        h.update(f"{r.pin}\n".encode())
    for filename in sorted(wheels):
        h.update(f"{filename}\0{hashlib.sha256(wheels[filename]).hexdigest()}\n".encode())
    return h.hexdigest()[:20]
