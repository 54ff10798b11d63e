"""The exceptions burla raises, one tree users can catch::

    BurlaError
    ├── ConfigError (ValueError)            bad argument, cluster.yaml or config
    ├── SerializationError (TypeError)      function or input cannot be pickled
    ├── InputTooBig (ValueError)            one input exceeds the size limit
    ├── ResultTooBig (ValueError)           one result exceeds what a message may carry
    ├── ClusterUnreachable (ConnectionError) no head answers at the address
    │   └── ConnectionLost                  the head went away mid-job
    ├── AuthenticationError (PermissionError) the head refused our token
    ├── ProtocolError (ConnectionError)     a peer sent bytes that are not burla
    ├── ProviderError                       Docker / a cloud API refused (message says the fix)
    ├── QueueUnavailable                    the head's queue backend (Redis) cannot be reached
    ├── BrokenExecutor (concurrent.futures.BrokenExecutor)
    │                                       a burla.Executor can run no more calls
    │                                       (defined in client/_executor.py: it needs
    │                                       concurrent.futures, which workers never import)
    ├── JobCanceled                         the job was canceled (Ctrl-C, cancel)
    ├── JobNotFound (LookupError)           burla.job(id): the head has no such detached job
    └── JobFailed                           the cluster could not complete the job
        ├── ResultsExpired                  a detached job's results passed their retention
        ├── WorkerCrashed                   an input killed its worker max_retries+1 times
        ├── CallTimeout (TimeoutError)      one call ran longer than func_timeout
        ├── NoCompatibleNodes               no node can host func_cpu / func_ram
        ├── FunctionLoadError               workers could not unpickle the function
        └── RemoteError                     the function raised an exception that
            │                               cannot be rebuilt locally (or one that would
            │                               end this program: KeyboardInterrupt...)
            └── RemoteExit                  the function called sys.exit() on the worker

A user function's own exception is re-raised as its original type, with the
remote traceback and ``exc.burla_input_index``; only when it cannot be
unpickled here does it arrive as ``RemoteError``.
"""

from __future__ import annotations


class BurlaError(Exception):
    """Base class of every burla exception."""


class ConfigError(BurlaError, ValueError):
    pass


class SerializationError(BurlaError, TypeError):
    pass


class InputTooBig(BurlaError, ValueError):
    pass


class ResultTooBig(BurlaError, ValueError):
    pass


class ClusterUnreachable(BurlaError, ConnectionError):
    pass


class AuthenticationError(BurlaError, PermissionError):
    pass


class ProtocolError(BurlaError, ConnectionError):
    pass


class ConnectionLost(ClusterUnreachable):
    pass


class ProviderError(BurlaError):
    pass


class QueueUnavailable(BurlaError):
    pass


class JobCanceled(BurlaError):
    pass


class JobNotFound(BurlaError, LookupError):
    """``burla.job(job_id)``: the cluster's head has no detached job of that id (never, or
    no longer: its results were all taken, it was canceled, or its record expired)."""


class JobFailed(BurlaError):
    """The job could not complete; ``input_index`` is set when one input is to blame."""

    def __init__(self, message: str, input_index: int | None = None):
        super().__init__(message)
        self.input_index = input_index
        self.burla_input_index = input_index


class ResultsExpired(JobFailed):
    """A detached job's results waited longer than the head's retention and were dropped."""


class WorkerCrashed(JobFailed):
    pass


class CallTimeout(JobFailed, TimeoutError):
    pass


class NoCompatibleNodes(JobFailed):
    pass


class FunctionLoadError(JobFailed):
    pass


class RemoteError(JobFailed):
    """A remote exception that could not be rebuilt locally.

    ``type_name`` is the remote exception's qualified type name and
    ``remote_traceback`` its formatted traceback.
    """

    def __init__(self, type_name: str, remote_traceback: str, input_index: int | None = None):
        super().__init__(f"{type_name} raised remotely:\n{remote_traceback}", input_index)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class RemoteExit(RemoteError):
    """The function raised SystemExit (``sys.exit(code)``) on a worker: an
    error naming the input and ``code``, never an exit of this program."""

    def __init__(self, code: object, remote_traceback: str, input_index: int | None = None):
        JobFailed.__init__(self, f"input {input_index}: the function called sys.exit({code!r}) on its worker "
                                 f"(exit code {code!r}); return a value or raise an exception instead\n"
                                 f"{remote_traceback}", input_index)
        self.type_name = "builtins.SystemExit"
        self.remote_traceback = remote_traceback
        self.code = code


# JobError.kind on the wire -> the class the client raises.
JOB_ERROR_KINDS: dict[str, type[JobFailed]] = {
    cls.__name__: cls
    for cls in (JobFailed, WorkerCrashed, CallTimeout, NoCompatibleNodes, FunctionLoadError, RemoteError,
                ResultsExpired)
}

# Shown (and pickled) as burla.X, the name users import and catch, not burla._errors.X.
for _cls in (BurlaError, ConfigError, SerializationError, InputTooBig, ResultTooBig, ClusterUnreachable,
             AuthenticationError, ProtocolError, ConnectionLost, ProviderError, JobCanceled, JobFailed, WorkerCrashed,
             CallTimeout, NoCompatibleNodes, FunctionLoadError, RemoteError, RemoteExit, JobNotFound, ResultsExpired,
             QueueUnavailable):
    _cls.__module__ = "burla"
del _cls
