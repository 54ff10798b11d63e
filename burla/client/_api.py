"""``remote_parallel_map``: the one call users make."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from .._errors import ConfigError
from .._stateful import CallableClass, is_callable_class
from ._job import JobOptions, JobRun

MAX_INPUT_BYTES = 256 * 1024 * 1024


def remote_parallel_map(
    function_: Callable[..., Any],
    inputs: Iterable[Any],
    func_cpu: int = 1,
    func_ram: float | None = None,
    max_parallelism: int | None = None,
    generator: bool = False,
    raise_errors: bool = True,
    spinner: bool = True,
    *,
    ordered: bool | None = None,
    max_retries: int = 3,
    func_timeout: float | None = None,
    max_input_bytes: int = MAX_INPUT_BYTES,
    image: str | None = None,
    func_gpu: int | None = None,
    init_args: tuple[Any, ...] = (),
    init_kwargs: dict[str, Any] | None = None,
    sync_packages: bool | None = None,
    detach: bool = False,
) -> Any:
    """Call ``function_`` on every input, in parallel on the cluster.

    A tuple input is unpacked into positional arguments; anything else is
    passed as the single argument.  ``inputs`` may be any iterable, including
    an endless generator (it is streamed with bounded memory).

    Returns a list of results in input order, or with ``generator=True`` an
    iterator yielding results as they complete (``ordered=True``: in input
    order).  ``func_cpu``/``func_ram`` (GiB) reserve resources per call;
    ``func_ram`` is enforced (a worker over it is killed and its input
    retried).  ``max_parallelism`` caps concurrent calls.  An exception
    raised by the function is re-raised here as its own type with the remote
    traceback and ``exc.burla_input_index``; with ``raise_errors=False`` it
    takes the input's place in the results instead.  A worker that dies
    mid-call has its input retried up to ``max_retries`` times (then
    ``WorkerCrashed``); ``func_timeout`` seconds bounds one call
    (``CallTimeout``).  Ctrl-C cancels the job and raises ``JobCanceled``.
    ``image`` runs the workers in that container image (clusters whose nodes
    run workers in containers: ``provider: {type: docker}``; the image needs
    only Python >= 3.10 and the function's own dependencies), and
    ``func_gpu`` reserves that many GPUs per call.

    ``function_`` may be a class whose instances are callable (it defines
    ``__call__``): each worker then builds one instance,
    ``function_(*init_args, **init_kwargs)``, when the job starts there, and
    calls it on every input it runs -- load a model once per worker, not once
    per input.  An error in the constructor fails the job once, as
    ``FunctionLoadError`` naming the class.

    On clusters whose workers run in containers (Docker, Compute Engine), the
    distributions installed here that the worker image lacks (or has at
    another version) are installed on each node before the job's first call
    there, once per node; projects installed from a local directory (``pip
    install -e .``) are built into wheels here and shipped.
    ``sync_packages=False`` (or ``BURLA_SYNC_PACKAGES=0`` in the environment)
    turns that off: the workers then have only what their image has.

    ``detach=True`` returns a ``burla.Job`` once the head holds every input;
    the job runs on without this process (closed laptop, SIGKILL), and
    ``burla.job(job_id).results()`` takes its results later, from any
    client.  It needs a cluster that outlives this process (``burla up``;
    with ``queue: {type: redis}`` it also survives a head restart).  Ctrl-C
    before the upload ends cancels the job.
    """
    if not isinstance(detach, bool):
        raise ConfigError(f"detach must be True or False, got {detach!r}")
    if detach and (generator or ordered):
        raise ConfigError("detach=True returns a burla.Job, whose .results() yields the results: "
                          "drop generator= / ordered=")
    run = prepare(function_, inputs, func_cpu, func_ram, max_parallelism, raise_errors, spinner, max_retries,
                  func_timeout, max_input_bytes, image, func_gpu, init_args, init_kwargs, sync_packages, detach)
    if detach:
        return run.detached()
    if generator:
        return ordered_values(run.results()) if ordered else (value for _, value in run.results())
    return collect(run, run.results())


def prepare(function_: Callable[..., Any], inputs: Iterable[Any], func_cpu: int, func_ram: float | None,
            max_parallelism: int | None, raise_errors: bool, spinner: bool, max_retries: int,
            func_timeout: float | None, max_input_bytes: int, image: str | None, func_gpu: int | None,
            init_args: tuple[Any, ...] = (), init_kwargs: dict[str, Any] | None = None,
            sync_packages: bool | None = None, detach: bool = False) -> JobRun:
    """Check every argument and pickle the function: errors here, before anything is sent."""
    if not callable(function_):
        raise ConfigError(f"function_ must be callable, got {type(function_).__name__}")
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__"):
        raise ConfigError(f"inputs must be an iterable of inputs (a list, generator...), got {type(inputs).__name__}")
    validate_options(func_cpu, func_ram, max_parallelism, max_retries, func_timeout, max_input_bytes, image, func_gpu,
                     sync_packages)
    if not isinstance(init_args, tuple) or not isinstance(init_kwargs, (dict, type(None))):
        raise ConfigError(f"init_args must be a tuple and init_kwargs a dict, got {type(init_args).__name__} "
                          f"and {type(init_kwargs).__name__}")
    if is_callable_class(function_):
        function_ = cast(Callable[..., Any], CallableClass(cast(type, function_), init_args, dict(init_kwargs or {})))
    elif init_args or init_kwargs:
        raise ConfigError(f"init_args / init_kwargs build a stateful worker from a class that defines __call__; "
                          f"{getattr(function_, '__qualname__', function_)!r} is not one")
    options = JobOptions(func_cpu, func_ram, max_parallelism, raise_errors, spinner, max_retries, func_timeout,
                         max_input_bytes, image or "", func_gpu or 0, syncs_packages(sync_packages), detach)
    return JobRun(function_, inputs, options)


def collect(run: JobRun, results: Iterable[tuple[int, Any]]) -> list[Any]:
    """The results as a list in input order."""
    if run.total is not None:
        out: list[Any] = [None] * run.total
        for index, value in results:
            out[index] = value
        return out
    got = dict(results)
    return [got[i] for i in range(len(got))]


def ordered_values(results: Iterator[tuple[int, Any]]) -> Iterator[Any]:
    """Values in input order from (index, value) pairs in any order."""
    waiting: dict[int, Any] = {}
    nxt = 0
    for index, value in results:
        waiting[index] = value
        while nxt in waiting:
            yield waiting.pop(nxt)
            nxt += 1


def validate_options(func_cpu: object, func_ram: object, max_parallelism: object, max_retries: object,
                     func_timeout: object, max_input_bytes: object, image: object, func_gpu: object,
                     sync_packages: object = None) -> None:
    """The checks of the options remote_parallel_map and Executor share."""
    if not isinstance(func_cpu, int) or isinstance(func_cpu, bool) or func_cpu < 1:
        raise ConfigError(f"func_cpu must be a whole number of CPUs >= 1, got {func_cpu!r}")
    if func_ram is not None and (not isinstance(func_ram, (int, float)) or func_ram <= 0):
        raise ConfigError(f"func_ram must be a positive number of GiB, got {func_ram!r}")
    if max_parallelism is not None and (not isinstance(max_parallelism, int) or max_parallelism < 1):
        raise ConfigError(f"max_parallelism must be an int >= 1, got {max_parallelism!r}")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if func_timeout is not None and (not isinstance(func_timeout, (int, float)) or func_timeout <= 0):
        raise ConfigError(f"func_timeout must be a positive number of seconds, got {func_timeout!r}")
    if not isinstance(max_input_bytes, int) or max_input_bytes < 1:
        raise ConfigError(f"max_input_bytes must be a positive int, got {max_input_bytes!r}")
    if image is not None and (not isinstance(image, str) or not image):
        raise ConfigError(f"image must be a container image name, got {image!r}")
    if func_gpu is not None and (not isinstance(func_gpu, int) or isinstance(func_gpu, bool) or func_gpu < 1):
        raise ConfigError(f"func_gpu must be a whole number of GPUs >= 1, got {func_gpu!r}")
    if sync_packages is not None and not isinstance(sync_packages, bool):
        raise ConfigError(f"sync_packages must be True or False, got {sync_packages!r}")


def syncs_packages(sync_packages: bool | None) -> bool:
    """The option, or its default: on unless BURLA_SYNC_PACKAGES says 0/false/no/off."""
    if sync_packages is not None:
        return sync_packages
    return os.environ.get("BURLA_SYNC_PACKAGES", "1").strip().lower() not in ("0", "false", "no", "off")
