"""``burla up`` with ``provider: {type: docker}``.

One private bridge network per cluster (``burla-NAME``).  The head runs in a
container too (``burla-NAME-head``): nodes reach it by name on the network,
clients through ports published on 127.0.0.1 only, and killing or restarting
it is a real failure that nodes survive (they reconnect to the same name).
Each node is a container (``burla-NAME-node-I``) whose daemon starts worker
containers through the Docker API (the ``container`` runtime), or runs
workers as processes inside itself (``worker_runtime: process``).

Everything created carries the label ``burla.cluster=NAME``, so ``down``
finds and removes it all even after a crash left no record behind.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any, ClassVar

from ..._config import ClusterRecord
from ..._errors import ProviderError
from .._provider import Resource, node_resources
from .._recipes import head_args, node_args
from .._spec import QueueSpec
from ._client import LABEL_CLUSTER, LABEL_ROLE, client, translated
from ._image import IMAGE, ensure_redis_image, image_present
from ._spec import HINTS, DockerClusterSpec

HEAD_PORT, HTTP_PORT, WORKER_PORT = 7000, 7001, 7100
STATUS_DIR = "/burla-status"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


HEAD_RESTARTS = 5  # crashes of the head container Docker restarts it after


def up(name: str, nodes: int, workers_per_node: int | None, image: str | None = None,
       worker_runtime: str = "container", packages: str = "index", queue: QueueSpec = QueueSpec()) -> ClusterRecord:
    c = client()
    image = image or IMAGE
    if not image_present(c, image):
        raise ProviderError(f"image {image!r} is not present and nothing can be pulled here: "
                            "run `burla image build` first (or `docker load` it)")
    if _find(c, name):
        raise ProviderError(f"Docker already has containers of a cluster named {name!r}: `burla down {name}` first")
    labels = {LABEL_CLUSTER: name}
    token = secrets.token_urlsafe(32)
    tcp, http = _free_port(), _free_port()
    try:
        with translated(f"creating cluster {name!r}"):
            net = c.networks.create(f"burla-{name}", driver="bridge", labels={**labels, LABEL_ROLE: "network"})
            queue_url = queue.head_arg()
            if queue.type == "redis" and not queue.url:
                queue_url = _start_redis(c, name, net.name)
            head = f"burla-{name}-head"
            c.containers.run(
                image, head_args(name, host="0.0.0.0", port=HEAD_PORT, http_port=HTTP_PORT, queue=queue_url),
                name=head, hostname=head, detach=True, network=net.name, environment={"BURLA_TOKEN": token},
                ports={f"{HEAD_PORT}/tcp": ("127.0.0.1", tcp), f"{HTTP_PORT}/tcp": ("127.0.0.1", http)},
                labels={**labels, LABEL_ROLE: "head"},
                # a crashed head comes back (same name, ports and token); `docker kill` or `burla down` stop it
                restart_policy={"Name": "on-failure", "MaximumRetryCount": HEAD_RESTARTS},
            )
            for i in range(1, nodes + 1):
                _start_node(c, name, i, net.name, image, workers_per_node, worker_runtime, token, packages)
    except BaseException:
        down(name)
        raise
    return ClusterRecord(name=name, provider="docker", head=f"127.0.0.1:{tcp}", http=f"http://127.0.0.1:{http}",
                         token=token)


def _start_redis(c: Any, cluster: str, network: str) -> str:
    """The cluster's own Redis (append-only file on a labelled volume); its URL for the head."""
    redis_image = ensure_redis_image(c)
    name = f"burla-{cluster}-redis"
    labels = {LABEL_CLUSTER: cluster}
    volume = c.volumes.create(f"{name}-data", labels={**labels, LABEL_ROLE: "volume"})
    c.containers.run(redis_image, name=name, hostname=name, detach=True, network=network,
                     volumes={volume.name: {"bind": "/data", "mode": "rw"}}, labels={**labels, LABEL_ROLE: "queue"},
                     restart_policy={"Name": "on-failure", "MaximumRetryCount": HEAD_RESTARTS})
    return f"redis://{name}:6379/0"


def _start_node(c: Any, cluster: str, i: int, network: str, image: str, workers: int | None, runtime: str,
                token: str, packages: str = "index") -> None:
    node = f"burla-{cluster}-node-{i}"
    labels = {LABEL_CLUSTER: cluster}
    cmd = node_args(f"burla-{cluster}-head:{HEAD_PORT}", node, workers=workers, provider="docker", reconnect_for=600,
                    status_dir=STATUS_DIR)
    volumes: dict[str, dict[str, str]] = {}
    if runtime == "container":
        volume = c.volumes.create(f"{node}-status", labels={**labels, LABEL_ROLE: "volume"})
        cmd += ["--worker-runtime", "container", "--worker-image", image, "--worker-network", network,
                "--advertise", f"{node}:{WORKER_PORT}", "--worker-listen", f"0.0.0.0:{WORKER_PORT}",
                "--status-volume", volume.name, "--packages-from", packages]
        volumes = {"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                   volume.name: {"bind": STATUS_DIR, "mode": "rw"}}
    c.containers.run(image, cmd, name=node, hostname=node, detach=True, network=network, volumes=volumes,
                     environment={"BURLA_TOKEN": token, "BURLA_CLUSTER": cluster},
                     labels={**labels, LABEL_ROLE: "node"})


def _find(c: Any, name: str) -> list[Any]:
    return c.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={name}"})  # type: ignore[no-any-return]  # the Docker SDK is untyped


def down(name: str) -> int:
    """Remove every container, volume and network labelled with the cluster; returns how many."""
    c = client()
    removed = 0
    with translated(f"removing cluster {name!r}"):
        containers = _find(c, name)
        # workers first: their nodes would otherwise replace them
        for cont in sorted(containers, key=lambda x: x.labels.get(LABEL_ROLE) != "node"):
            cont.remove(force=True)
            removed += 1
        for cont in _find(c, name):  # replacements a node started before it died
            cont.remove(force=True)
            removed += 1
        for vol in c.volumes.list(filters={"label": f"{LABEL_CLUSTER}={name}"}):
            vol.remove(force=True)
            removed += 1
        for net in c.networks.list(filters={"label": f"{LABEL_CLUSTER}={name}"}):
            net.remove()
            removed += 1
    return removed


def status(name: str) -> list[Resource]:
    c = client()
    with translated("listing containers"):
        return [Resource(x.name, x.labels.get(LABEL_ROLE, "worker"), x.status)
                for x in sorted(_find(c, name), key=lambda x: x.name)]


class DockerProvider:
    """``provider: {type: docker}``: the Docker SDK is blocking, so every call
    runs in a thread."""

    kind: ClassVar[str] = "docker"
    spec_type: ClassVar[type[DockerClusterSpec]] = DockerClusterSpec
    spec_hints: ClassVar[dict[str, str]] = HINTS
    ready_timeout: ClassVar[float] = 30.0

    async def up(self, spec: DockerClusterSpec) -> ClusterRecord:
        p = spec.provider
        return await asyncio.to_thread(up, spec.name, spec.nodes, spec.workers_per_node, p.image, p.worker_runtime,
                                       p.packages, spec.queue)

    def placeholder(self, spec: DockerClusterSpec) -> ClusterRecord:
        return ClusterRecord(name=spec.name, provider=self.kind)  # (down finds its objects by label)

    async def down(self, name: str, record: ClusterRecord | None) -> int:
        return await asyncio.to_thread(down, name)

    async def status(self, record: ClusterRecord) -> list[Resource]:
        return await asyncio.to_thread(status, record.name)

    async def nodes(self, record: ClusterRecord) -> list[Resource]:
        return node_resources(await self.status(record))

    async def exists(self, name: str) -> bool:
        try:
            return bool(await asyncio.to_thread(status, name))
        except ProviderError:
            return False

    def log_hint(self, record: ClusterRecord) -> str:
        return f"see `docker logs burla-{record.name}-head`"
