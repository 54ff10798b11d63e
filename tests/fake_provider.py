"""A provider for tests of the CLI: real local daemons, plus faults on demand.

Plugged in like any third-party provider: ``BURLA_PROVIDERS=fake=tests.fake_provider:FakeProvider``.
Every call is appended to ``$FAKE_PROVIDER_LOG`` (one line each), so a test
can check what the CLI asked of its provider.
"""

from __future__ import annotations

import os
from typing import ClassVar

import msgspec

from burla import ProviderError
from burla._config import config_dir
from burla.cloud import ClusterRecord, Resource
from burla.cloud._local import LocalProvider, start_local_cluster
from burla.cloud._spec import ClusterName, NodeCount, WorkersPerNode


class FakeProviderSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="fake", tag_field="type"):
    fail_up: bool = False  # up raises ProviderError
    never_ready: bool = False  # up starts the head but no node ever registers
    leftovers: bool = False  # exists() reports unrecorded resources


class FakeClusterSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider: FakeProviderSpec
    name: ClusterName = "fake"
    nodes: NodeCount = 1
    workers_per_node: WorkersPerNode | None = None


def _log(line: str) -> None:
    with open(os.environ["FAKE_PROVIDER_LOG"], "a") as f:
        f.write(line + "\n")


class FakeProvider(LocalProvider):
    kind: ClassVar[str] = "fake"
    spec_type: ClassVar[type[FakeClusterSpec]] = FakeClusterSpec  # type: ignore[assignment]  # a wider spec than local's
    ready_timeout: ClassVar[float] = 20.0

    async def up(self, spec: FakeClusterSpec) -> ClusterRecord:  # type: ignore[override]  # its own spec type
        _log(f"up {spec.name}")
        if spec.provider.fail_up:
            raise ProviderError("fake: no capacity in any zone")
        if spec.provider.leftovers:
            config_dir().mkdir(parents=True, exist_ok=True)
            (config_dir() / f"{spec.name}.leftovers").write_text("x")
        nodes = 0 if spec.provider.never_ready else spec.nodes
        cluster = start_local_cluster(spec.name, nodes, spec.workers_per_node, attached=False)
        record = cluster.record
        record.provider = "fake"
        return record

    async def down(self, name: str, record: ClusterRecord | None) -> int:
        _log(f"down {name} {'recorded' if record and record.pids else 'unrecorded'}")
        (config_dir() / f"{name}.leftovers").unlink(missing_ok=True)
        return await super().down(name, record)

    async def status(self, record: ClusterRecord) -> list[Resource]:
        _log(f"status {record.name}")
        return await super().status(record)

    async def exists(self, name: str) -> bool:
        return (config_dir() / f"{name}.leftovers").exists()
