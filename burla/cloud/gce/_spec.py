"""cluster.yaml for ``provider: {type: gce}``, decoded before any API call.

Every error names the key path (``provider.zones[1]``) and the fix (see
``cloud/_spec.py``); the patterns and ranges below are the whole validation.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

import msgspec

from .._spec import NodeCount, WorkersPerNode

DEFAULT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{0,30}$")]  # a GCE label value
Project = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
Zone = Annotated[str, msgspec.Meta(pattern=r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")]
MachineType = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9]*-[a-z0-9-]+$")]
Tag = Annotated[str, msgspec.Meta(pattern=r"^[a-z][-a-z0-9]{0,62}$")]
Endpoint = Annotated[str, msgspec.Meta(pattern=r"^https?://")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]

HINTS = {
    "name": "lowercase letters, digits and - (a GCE label), e.g. name: burla",
    "provider.project": "set the Google Cloud project id, e.g. project: my-project-123",
    "provider.zone": "write e.g. zone: us-central1-a",
    "provider.zones": "write e.g. zones: [us-central1-a, us-central1-b]",
    "provider.api_endpoint": "write e.g. api_endpoint: http://127.0.0.1:8080",
    "nodes": "an integer from 1 to 10000, e.g. nodes: 2",
    "machine_type": "write e.g. machine_type: n2-standard-4",
    "disk_gb": "an integer from 10 to 65536, e.g. disk_gb: 20",
    "spot": "true or false, e.g. spot: true",
    "tags": "a list of lowercase network tags, e.g. tags: [burla]",
    "idle_timeout_s": "seconds from 1 to 604800, e.g. idle_timeout_s: 600",
    "reap_after_s": "seconds from 1 to 86400, e.g. reap_after_s: 60",
    "head": "write e.g. head: {placement: vm, machine_type: e2-small}",
    "head.placement": "use placement: vm (or local)",
    "head.machine_type": "write e.g. machine_type: e2-small",
    "head.port": "a TCP port from 1 to 65535, e.g. port: 7000",
    "worker_image": ("not on gce: workers run in the node VM's own Python, where each job's missing "
                     "distributions are installed (for workers in a container image, use provider: {type: docker})"),
    "service_account": "it moved to head: {service_account: EMAIL}; node VMs get no service account",
    "head.allow_from": "a list of the CIDRs clients connect from, e.g. allow_from: [203.0.113.7/32]",
    "head.service_account": "write e.g. service_account: burla-head@my-project-123.iam.gserviceaccount.com",
}


class GceProviderSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="gce", tag_field="type"):
    project: Project
    zone: Zone | None = None
    zones: Annotated[list[Zone], msgspec.Meta(min_length=1)] | None = None
    api_endpoint: Endpoint | None = None

    def __post_init__(self) -> None:
        if self.zone is not None and self.zones is not None:
            raise ValueError("zones: both zone and zones are set")
        if self.zone is None and self.zones is None:
            raise ValueError("zones: missing")


class GceHeadSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    placement: Literal["vm", "local"] = "vm"
    machine_type: MachineType = "e2-small"
    advertise: NonEmpty | None = None
    port: Port = 7000  # clients and nodes (TLS); the dashboard and JSON API on port + 1 (HTTPS)
    # The head VM's identity: its reaper deletes node VMs (roles: README, "Google Cloud")
    service_account: Annotated[str, msgspec.Meta(pattern=r".+@.+")] | None = None
    # Where clients may reach a head VM from (its firewall rule); default: this machine's public address
    allow_from: Annotated[list[NonEmpty], msgspec.Meta(min_length=1)] | None = None

    def __post_init__(self) -> None:
        for i, cidr in enumerate(self.allow_from or ()):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"allow_from[{i}]: {cidr!r} is not a CIDR") from None


class GceSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider: GceProviderSpec
    name: Name = "burla"
    nodes: NodeCount = 1
    workers_per_node: WorkersPerNode | None = None
    machine_type: MachineType = "n2-standard-4"
    disk_gb: Annotated[int, msgspec.Meta(ge=10, le=65536)] = 20
    spot: bool = False
    image: NonEmpty = DEFAULT_IMAGE
    network: NonEmpty = "default"
    tags: tuple[Tag, ...] = ()
    idle_timeout_s: Annotated[int, msgspec.Meta(ge=1, le=7 * 86400)] = 600
    reap_after_s: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 60  # a node silent this long has its VM deleted
    head: GceHeadSpec = GceHeadSpec()

    @property
    def project(self) -> str:
        return self.provider.project

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(self.provider.zones or [self.provider.zone or ""])

    @property
    def api_endpoint(self) -> str | None:
        return self.provider.api_endpoint

    @property
    def node_tag(self) -> str:
        return f"burla-{self.name}-node"

    @property
    def head_tag(self) -> str:
        return f"burla-{self.name}-head"
