"""cluster.yaml: parsed and checked at the edge into a frozen ClusterSpec."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError

_PROVIDERS = ("local", "docker", "gce")
_PROVIDER_KEYS = {"local": {"type"}, "docker": {"type", "image", "worker_runtime"}}


@dataclass(frozen=True)
class ClusterSpec:
    name: str = "local"
    provider: str = "local"
    nodes: int = 1
    workers_per_node: int | None = None
    image: str | None = None  # docker: node/worker image (default burla:VERSION)
    worker_runtime: str = "container"  # docker: "container" or "process"

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "cluster.yaml") -> Any:
        """A ClusterSpec, or a GceSpec for ``provider: {type: gce}``."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a mapping with keys name, provider, nodes, workers_per_node")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "cluster.yaml") -> Any:
        provider = data.get("provider")
        if isinstance(provider, dict) and provider.get("type") == "gce":
            return _gce(data, source)
        known = {"name", "provider", "nodes", "workers_per_node"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{source}: unknown key {key!r} (known keys: {', '.join(sorted(known))})")
        name = data.get("name", "local")
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{source}: 'name' must be a non-empty string of letters, digits, - and _, got {name!r}")
        provider = data.get("provider", {"type": "local"})
        if not isinstance(provider, dict) or not isinstance(provider.get("type"), str):
            raise ConfigError(f"{source}: 'provider' must be a mapping with a 'type', e.g. provider: {{type: local}}")
        if provider["type"] not in _PROVIDERS:
            raise ConfigError(f"{source}: provider type {provider['type']!r} is not supported (supported: {', '.join(_PROVIDERS)})")
        kind = provider["type"]
        extra = set(provider) - _PROVIDER_KEYS[kind]
        if extra:
            raise ConfigError(f"{source}: unknown key {sorted(extra)[0]!r} in 'provider' for type {kind} "
                              f"(known: {', '.join(sorted(_PROVIDER_KEYS[kind]))})")
        image = provider.get("image")
        if image is not None and (not isinstance(image, str) or not image):
            raise ConfigError(f"{source}: 'provider.image' must be an image name like burla:0.1.0, got {image!r}")
        runtime = provider.get("worker_runtime", "container")
        if runtime not in ("container", "process"):
            raise ConfigError(f"{source}: 'provider.worker_runtime' must be container or process, got {runtime!r}")
        nodes = data.get("nodes", 1)
        if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
            raise ConfigError(f"{source}: 'nodes' must be an integer >= 1, got {nodes!r}")
        wpn = data.get("workers_per_node")
        if wpn is not None and (not isinstance(wpn, int) or isinstance(wpn, bool) or wpn < 1):
            raise ConfigError(f"{source}: 'workers_per_node' must be an integer >= 1, got {wpn!r}")
        return cls(name, kind, nodes, wpn, image, runtime)


def _gce(data: dict[str, Any], source: str) -> Any:
    from ..cloud.gce._spec import parse

    name = data.get("name", "burla")
    if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9-]{0,30}$", name):
        raise ConfigError(f"{source}: 'name' must be lowercase letters, digits and - (a GCE label), got {name!r}")
    return parse(data, name)
