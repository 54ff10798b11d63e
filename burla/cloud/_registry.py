"""Providers by ``provider.type``.  Built-in ones load on first use (their
SDKs are optional extras); more can be plugged in without changing burla with
``BURLA_PROVIDERS="type=package.module:Class,..."`` (the tests' fake provider
arrives this way)."""

from __future__ import annotations

import importlib
import os

from .._errors import ConfigError
from ._provider import Provider

_BUILTIN = {
    "local": "burla.cloud._local:LocalProvider",
    "docker": "burla.cloud.docker._provider:DockerProvider",
    "gce": "burla.cloud.gce._provider:GceProvider",
}


def _table() -> dict[str, str]:
    table = dict(_BUILTIN)
    for item in filter(None, os.environ.get("BURLA_PROVIDERS", "").split(",")):
        kind, _, target = item.partition("=")
        if not kind or ":" not in target:
            raise ConfigError(f"BURLA_PROVIDERS: {item!r} is not TYPE=module:Class")
        table[kind.strip()] = target.strip()
    return table


def provider_types() -> list[str]:
    return list(_table())


def provider_class(kind: str) -> type[Provider]:
    target = _table().get(kind)
    if target is None:
        raise ConfigError(f"provider type {kind!r} is not supported (supported: {', '.join(provider_types())})")
    module, _, name = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), name)
    return cls


def get_provider(kind: str) -> Provider:
    return provider_class(kind)()
