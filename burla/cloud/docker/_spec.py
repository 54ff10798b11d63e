"""cluster.yaml for ``provider: {type: docker}``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .._spec import ClusterName, NodeCount, WorkersPerNode

HINTS = {
    "provider.image": "an image name like burla:0.1.0 (`burla image build` makes it)",
    "provider.worker_runtime": "container (workers in their own containers) or process",
}


class DockerProviderSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="docker", tag_field="type"):
    image: Annotated[str, msgspec.Meta(min_length=1)] | None = None  # node/worker image (default burla:VERSION)
    worker_runtime: Literal["container", "process"] = "container"


class DockerClusterSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider: DockerProviderSpec
    name: ClusterName = "local"
    nodes: NodeCount = 1
    workers_per_node: WorkersPerNode | None = None
