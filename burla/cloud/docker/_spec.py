"""cluster.yaml for ``provider: {type: docker}``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .._spec import ClusterName, NodeCount, QueueSpec, WorkersPerNode

HINTS = {
    "provider.image": "an image name like burla:0.1.0 (`burla image build` makes it)",
    "provider.worker_runtime": "container (workers in their own containers) or process",
    "provider.packages": "index (nodes install a job's packages from the package index) or client (only wheels "
                         "the client ships: nodes that cannot reach an index)",
}


class DockerProviderSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="docker", tag_field="type"):
    image: Annotated[str, msgspec.Meta(min_length=1)] | None = None  # node/worker image (default burla:VERSION)
    worker_runtime: Literal["container", "process"] = "container"
    # Where a job's packages the worker image lacks come from: the index, or wheels the client ships.
    packages: Literal["index", "client"] = "index"


class DockerClusterSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider: DockerProviderSpec
    name: ClusterName = "local"
    nodes: NodeCount = 1
    workers_per_node: WorkersPerNode | None = None
    queue: QueueSpec = QueueSpec()  # {type: redis} with no url: the cluster runs its own Redis container
