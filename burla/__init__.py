"""burla: run any Python function over millions of inputs with one call.

    import burla
    results = burla.remote_parallel_map(my_function, my_inputs)
"""

from typing import Any

from ._errors import (
    AuthenticationError,
    BurlaError,
    CallTimeout,
    ClusterUnreachable,
    ConfigError,
    ConnectionLost,
    FunctionLoadError,
    InputTooBig,
    JobCanceled,
    JobFailed,
    NoCompatibleNodes,
    ProtocolError,
    ProviderError,
    RemoteError,
    SerializationError,
    WorkerCrashed,
)
from ._version import __version__

__all__ = [
    "AuthenticationError",
    "BurlaError",
    "CallTimeout",
    "ClusterUnreachable",
    "ConfigError",
    "ConnectionLost",
    "FunctionLoadError",
    "InputTooBig",
    "JobCanceled",
    "JobFailed",
    "NoCompatibleNodes",
    "ProtocolError",
    "ProviderError",
    "RemoteError",
    "SerializationError",
    "WorkerCrashed",
    "__version__",
    "connect",
    "remote_parallel_map",
    "shutdown",
]


def __getattr__(name: str) -> Any:
    # The client API loads on first use: worker processes import burla's
    # runtime without it (and without msgspec in a user's image).
    if name == "remote_parallel_map":
        from ._api import remote_parallel_map

        return remote_parallel_map
    if name in ("connect", "shutdown"):
        from . import _cluster

        return getattr(_cluster, name)
    raise AttributeError(f"module 'burla' has no attribute {name!r}")
