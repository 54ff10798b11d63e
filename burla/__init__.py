"""burla: run any Python function over millions of inputs with one call.

    import burla
    results = burla.remote_parallel_map(my_function, my_inputs)
"""

from typing import TYPE_CHECKING, Any

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
    JobNotFound,
    NoCompatibleNodes,
    ProtocolError,
    ProviderError,
    QueueUnavailable,
    RemoteError,
    RemoteExit,
    ResultsExpired,
    ResultTooBig,
    SerializationError,
    WorkerCrashed,
)
from ._version import __version__

if TYPE_CHECKING:  # typed for users' checkers; at run time loaded on first use (see __getattr__)
    from .client import (
        BrokenExecutor,
        Executor,
        Job,
        connect,
        job,
        remote_parallel_map,
        remote_parallel_map_async,
        shutdown,
    )

__all__ = [
    "AuthenticationError",
    "BrokenExecutor",
    "BurlaError",
    "CallTimeout",
    "ClusterUnreachable",
    "ConfigError",
    "ConnectionLost",
    "Executor",
    "FunctionLoadError",
    "InputTooBig",
    "Job",
    "JobCanceled",
    "JobFailed",
    "JobNotFound",
    "NoCompatibleNodes",
    "ProtocolError",
    "ProviderError",
    "QueueUnavailable",
    "RemoteError",
    "RemoteExit",
    "ResultTooBig",
    "ResultsExpired",
    "SerializationError",
    "WorkerCrashed",
    "__version__",
    "connect",
    "job",
    "remote_parallel_map",
    "remote_parallel_map_async",
    "shutdown",
]


_CLIENT_NAMES = ("BrokenExecutor", "Executor", "Job", "connect", "job", "remote_parallel_map",
                 "remote_parallel_map_async", "shutdown")


def __getattr__(name: str) -> Any:
    # The client API loads on first use: worker processes import burla's
    # runtime without it (and without msgspec in a user's image).
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    if name == "joblib":  # burla.joblib.register(): needs joblib, so only loaded when asked for
        import importlib

        return importlib.import_module("burla.joblib")
    raise AttributeError(f"module 'burla' has no attribute {name!r}")
