"""cluster.yaml for ``provider: {type: gce}``, validated before any API call.

Every error names the key path (``provider.zones[1]``) and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..._errors import ConfigError

TOP_KEYS = {"name", "provider", "nodes", "workers_per_node", "machine_type", "disk_gb", "spot", "image",
            "worker_image", "network", "tags", "service_account", "idle_timeout_s", "reap_after_s", "head"}
PROVIDER_KEYS = {"type", "project", "zone", "zones", "api_endpoint"}
HEAD_KEYS = {"placement", "machine_type", "advertise", "port"}
DEFAULT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
_MACHINE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


@dataclass(frozen=True)
class GceSpec:
    name: str
    project: str
    zones: tuple[str, ...]
    nodes: int = 1
    workers_per_node: int | None = None
    machine_type: str = "n2-standard-4"
    disk_gb: int = 20
    spot: bool = False
    image: str = DEFAULT_IMAGE
    worker_image: str | None = None
    network: str = "default"
    tags: tuple[str, ...] = ()
    service_account: str | None = None
    idle_timeout_s: int = 600
    reap_after_s: int = 60  # a node silent this long has its VM deleted by the head
    head_placement: str = "vm"
    head_machine_type: str = "e2-small"
    head_advertise: str | None = None
    head_port: int = 7000
    api_endpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def node_tag(self) -> str:
        return f"burla-{self.name}-node"

    @property
    def head_tag(self) -> str:
        return f"burla-{self.name}-head"


def _fail(path: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"cluster.yaml: {path}: {problem}; {fix}")


def _check_keys(data: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in data:
        if key not in known:
            raise _fail(f"{prefix}{key}", "unknown key", f"known keys here: {', '.join(sorted(known))}")


def _int(data: dict[str, Any], key: str, default: int | None, lo: int, hi: int, path: str) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, f"must be an integer, got {value!r}", f"write e.g. {key}: {lo if lo > 0 else 1}")
    if not lo <= value <= hi:
        raise _fail(path, f"{value} is out of range", f"use a value from {lo} to {hi}")
    return value


def _str(data: dict[str, Any], key: str, default: str | None, path: str, pattern: re.Pattern[str] | None = None,
         example: str = "") -> str | None:
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(path, f"must be a non-empty string, got {value!r}", f"write e.g. {key}: {example or 'VALUE'}")
    if pattern is not None and not pattern.match(value):
        raise _fail(path, f"{value!r} is not a valid value", f"write e.g. {key}: {example}")
    return value


def parse(data: dict[str, Any], name: str) -> GceSpec:
    _check_keys(data, TOP_KEYS, "")
    provider = data["provider"]
    _check_keys(provider, PROVIDER_KEYS, "provider.")
    project = _str(provider, "project", None, "provider.project", _PROJECT, "my-project-123")
    if project is None:
        raise _fail("provider.project", "missing", "set the Google Cloud project id, e.g. project: my-project-123")
    if "zone" in provider and "zones" in provider:
        raise _fail("provider.zones", "both zone and zones are set", "keep one: zones: [us-central1-a, us-central1-b]")
    zones = provider.get("zones", [provider["zone"]] if "zone" in provider else None)
    if not isinstance(zones, list) or not zones:
        raise _fail("provider.zones", "missing or empty", "set zone: us-central1-a or zones: [us-central1-a, ...]")
    for i, zone in enumerate(zones):
        if not isinstance(zone, str) or not _ZONE.match(zone):
            raise _fail(f"provider.zones[{i}]", f"{zone!r} is not a zone name", "write e.g. zones: [us-central1-a]")
    endpoint = _str(provider, "api_endpoint", None, "provider.api_endpoint", re.compile(r"^https?://"),
                    "http://127.0.0.1:8080")
    head = data.get("head", {})
    if not isinstance(head, dict):
        raise _fail("head", "must be a mapping", "write e.g. head: {placement: vm, machine_type: e2-small}")
    _check_keys(head, HEAD_KEYS, "head.")
    placement = head.get("placement", "vm")
    if placement not in ("vm", "local"):
        raise _fail("head.placement", f"{placement!r} is not vm or local", "use placement: vm (or local)")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and re.match(r"^[a-z][-a-z0-9]{0,62}$", t) for t in tags):
        raise _fail("tags", f"must be a list of lowercase network tags, got {tags!r}", "write e.g. tags: [burla]")
    spot = data.get("spot", False)
    if not isinstance(spot, bool):
        raise _fail("spot", f"must be true or false, got {spot!r}", "write spot: true")
    return GceSpec(
        name=name, project=project, zones=tuple(zones),
        nodes=_int(data, "nodes", 1, 1, 1000, "nodes"),  # type: ignore[arg-type]
        workers_per_node=_int(data, "workers_per_node", None, 1, 512, "workers_per_node"),
        machine_type=_str(data, "machine_type", "n2-standard-4", "machine_type", _MACHINE, "n2-standard-4"),  # type: ignore[arg-type]
        disk_gb=_int(data, "disk_gb", 20, 10, 65536, "disk_gb"),  # type: ignore[arg-type]
        spot=spot,
        image=_str(data, "image", DEFAULT_IMAGE, "image", None, DEFAULT_IMAGE),  # type: ignore[arg-type]
        worker_image=_str(data, "worker_image", None, "worker_image", None, "burla:0.1.0"),
        network=_str(data, "network", "default", "network", None, "default"),  # type: ignore[arg-type]
        tags=tuple(tags),
        service_account=_str(data, "service_account", None, "service_account", re.compile(r".+@.+"),
                             "burla@my-project-123.iam.gserviceaccount.com"),
        idle_timeout_s=_int(data, "idle_timeout_s", 600, 1, 7 * 86400, "idle_timeout_s"),  # type: ignore[arg-type]
        reap_after_s=_int(data, "reap_after_s", 60, 1, 86400, "reap_after_s"),  # type: ignore[arg-type]
        head_placement=placement,
        head_machine_type=_str(head, "machine_type", "e2-small", "head.machine_type", _MACHINE, "e2-small"),  # type: ignore[arg-type]
        head_advertise=_str(head, "advertise", None, "head.advertise", None, "10.128.0.5"),
        head_port=_int(head, "port", 7000, 1, 65535, "head.port"),  # type: ignore[arg-type]
        api_endpoint=endpoint,
    )
