"""The one interface every node provider implements, and the record it keeps.

Node states, as a provider sees them::

    (spec) --up--> CREATED --daemon says NodeHello to the head--> REGISTERED
    any state --down--> gone      REGISTERED --silent / killed--> LOST (the head requeues its work)

``up`` creates the head and the nodes and returns a ``ClusterRecord`` (what
``burla down`` and later clients need); the CLI then waits for the nodes to
register with the head, and calls ``down`` if they do not.  ``down`` deletes
everything the cluster created, found by label where the provider labels
(``record`` may then be None: ``burla up`` crashed before writing it).
``status`` lists what exists (processes, containers, VMs) whether or not it
ever registered.  Blocking SDK calls go through ``asyncio.to_thread``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import msgspec

from .._config import ClusterRecord


class Resource(msgspec.Struct, frozen=True):
    """One thing a cluster is made of: a process, a container, a VM, a network..."""

    name: str
    role: str  # head | node | worker | network | volume | firewall
    state: str
    zone: str = ""
    created: float = 0.0  # unix time it was created (0: not known)
    cost_per_hour: float = 0.0  # USD, list price where known (0: not known, or free)


class Provider(Protocol):
    kind: ClassVar[str]
    spec_type: ClassVar[type[Any]]  # the msgspec.Struct that cluster.yaml decodes into
    spec_hints: ClassVar[dict[str, str]]  # key path -> how to fix a bad value
    ready_timeout: ClassVar[float]  # seconds `burla up` waits for every node to register

    def placeholder(self, spec: Any) -> ClusterRecord:
        """The record ``burla up`` keeps before its first create call: enough for ``down`` to find
        everything of the cluster (by label) if ``up`` dies before it returns."""
    async def up(self, spec: Any) -> ClusterRecord: ...
    async def down(self, name: str, record: ClusterRecord | None) -> int:
        """Delete everything of cluster ``name``; returns how many things were removed."""
    async def status(self, record: ClusterRecord) -> list[Resource]: ...
    async def nodes(self, record: ClusterRecord) -> list[Resource]: ...
    async def exists(self, name: str) -> bool:
        """Whether resources of cluster ``name`` exist that no record names."""
    def log_hint(self, record: ClusterRecord) -> str:
        """Where to look when nodes do not register."""


def node_resources(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r.role == "node"]
