"""burla: run any Python function over millions of inputs with one call.

    import burla
    results = burla.remote_parallel_map(my_function, my_inputs)
"""

from ._api import remote_parallel_map
from ._cluster import connect, shutdown
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
