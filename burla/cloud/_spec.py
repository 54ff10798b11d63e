"""cluster.yaml: decoded at the edge into a provider's typed, frozen spec.

Each provider declares its spec as a ``msgspec.Struct`` (``Provider.spec_type``)
whose ``provider`` field is tagged by ``type``; msgspec checks every key and
value against it, and ``load_spec`` turns its verdict into one ``ConfigError``
that names the file, the key path (``provider.zones[1]``) and, where known,
the fix.  Nothing is checked by hand.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from .._errors import ConfigError
from .._queue_urls import REDIS_SCHEMES

# Types shared by every provider's spec.
ClusterName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
NodeCount = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
WorkersPerNode = Annotated[int, msgspec.Meta(ge=1, le=4096)]

class QueueSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``queue:`` where the head keeps jobs' queues (``scheduler/backends``)."""

    type: Literal["memory", "redis"] = "memory"
    url: str = ""  # redis://HOST:PORT/DB (type redis; a Docker cluster without one runs its own Redis)

    def __post_init__(self) -> None:
        if self.type == "memory" and self.url:
            raise ValueError("url: only for queue: {type: redis}")
        if self.url and not self.url.startswith(REDIS_SCHEMES):
            raise ValueError("url: expected redis://HOST:PORT/DB")

    def head_arg(self) -> str:
        """The head's ``--queue``."""
        return self.url if self.type == "redis" else "memory"


HINTS = {
    "name": "letters, digits, - and _, e.g. name: demo",
    "nodes": "write e.g. nodes: 2",
    "workers_per_node": "an integer >= 1, e.g. workers_per_node: 4 (more than the CPUs is fine for I/O-bound work)",
    "provider": "write e.g. provider: {type: local}",
    "provider.type": "one of the supported types, e.g. provider: {type: local}",
    "queue": "e.g. queue: {type: redis, url: redis://127.0.0.1:6379/0}",
    "queue.url": "e.g. queue: {type: redis, url: redis://127.0.0.1:6379/0}",
    "queue.type": "memory (the default: in the head) or redis",
}
_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")
_MISSING = re.compile(r"Object missing required field `(.+)`")
_NAMED = re.compile(r"^([a-z_]+(?:\[\d+\])?): (.+)$")


def load_spec(text: str, source: str = "cluster.yaml") -> Any:
    """The spec of ``text`` (cluster.yaml's contents), typed by its provider."""
    import yaml

    from ._registry import provider_class, provider_types

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with keys name, provider, nodes, workers_per_node")
    provider = data.setdefault("provider", {"type": "local"})
    if not isinstance(provider, dict) or not isinstance(provider.get("type"), str):
        raise ConfigError(f"{source}: provider: must be a mapping with a type; {HINTS['provider']}")
    kind = provider["type"]
    if kind not in provider_types():
        raise ConfigError(f"{source}: provider.type: provider type {kind!r} is not supported "
                          f"(supported: {', '.join(provider_types())})")
    cls = provider_class(kind)
    return decode(data, cls.spec_type, source, {**HINTS, **cls.spec_hints})


def decode(data: dict[str, Any], spec_type: type[Any], source: str, hints: dict[str, str]) -> Any:
    try:
        return msgspec.convert(data, spec_type)
    except msgspec.ValidationError as e:
        raise config_error(str(e), source, hints) from None


def config_error(message: str, source: str, hints: dict[str, str]) -> ConfigError:
    """msgspec's "Expected `int` >= 1 - at `$.nodes`" as
    "cluster.yaml: nodes: expected int >= 1; write e.g. nodes: 2"."""
    problem, _, where = message.partition(" - at `")
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    if m := _UNKNOWN.match(problem):
        path, problem = _join(path, m.group(1)), "unknown key"
    elif m := _MISSING.match(problem):
        path, problem = _join(path, m.group(1)), "missing"
    elif m := _NAMED.match(problem):  # a __post_init__ check: "key: problem"
        path, problem = _join(path, m.group(1)), m.group(2)
    elif "matching regex" in problem:
        problem = "not a valid value"
    else:
        problem = problem.replace("`", "")
        problem = problem[:1].lower() + problem[1:]
    hint = hints.get(re.sub(r"\[\d+\]", "", path))
    return ConfigError(f"{source}: {path or '(top level)'}: {problem}" + (f"; {hint}" if hint else ""))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def provider_type(spec: Any) -> str:
    """The ``provider.type`` a decoded spec was tagged with."""
    tag: str = spec.provider.__struct_config__.tag
    return tag
