"""Where a Docker node installs a job's environment: a one-off container of
the worker image, running that image's own pip (issue 12, item 4; the
environments themselves are ``runtime/_environments.py``).

The installer trusts the host's CA bundle (mounted read-only, pip pointed at
it), as behind a corporate proxy.  ``root`` is a directory the node sees at
the same path as its containers do (the node's status volume, or a bind
mount).
"""

from __future__ import annotations

import time
from typing import Any

from ...runtime._environments import INSTALL_TIMEOUT, Environments, checked
from ._client import translated

IDENTITY_TTL = 30.0  # seconds an image's id is trusted without asking Docker again (a job's set-up: ~2 ms)


class ContainerInstaller:
    def __init__(self, docker: Any, volumes: dict[str, dict[str, str]], ca_bundle: str | None = "/etc/ssl/certs",
                 network: str | None = None, offline: bool = False) -> None:
        self.docker, self.volumes, self.ca_bundle, self.network = docker, volumes, ca_bundle, network
        self.offline = offline  # no network at all: everything it installs came with the job
        self._ids: dict[str, tuple[str, float]] = {}  # image -> (its id, when Docker said so)

    def identity(self, image: str) -> str:
        known = self._ids.get(image)
        if known is not None and time.monotonic() - known[1] < IDENTITY_TTL:
            return known[0]
        with translated(f"worker image {image!r} on this node"):
            image_id: str = self.docker.images.get(image).id
        self._ids[image] = (image_id, time.monotonic())
        return image_id

    def python(self, image: str, args: list[str], what: str) -> str:
        volumes = dict(self.volumes)
        env = {"PIP_NO_CACHE_DIR": "1"}
        if self.ca_bundle:
            volumes[self.ca_bundle] = {"bind": "/etc/ssl/certs", "mode": "ro"}
            env["PIP_CERT"] = env["SSL_CERT_FILE"] = "/etc/ssl/certs/ca-certificates.crt"
        with translated(what):
            net: dict[str, Any] = {"network_disabled": True} if self.offline else {"network": self.network}
            container = self.docker.containers.run(image, args, entrypoint=["python3"], detach=True,
                                                   volumes=volumes, environment=env, labels={"burla.role": "installer"},
                                                   **net)
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
        return checked(what, code, out)


def container_environments(docker: Any, root: str, volumes: dict[str, dict[str, str]],
                           ca_bundle: str | None = "/etc/ssl/certs", network: str | None = None,
                           wheels_only: bool = False) -> Environments:
    """``wheels_only``: install only the wheels the job brought, in a container with no network."""
    return Environments(ContainerInstaller(docker, volumes, ca_bundle, network, wheels_only), root, wheels_only)
