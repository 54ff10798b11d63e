"""``remote_parallel_map``: the one call users make."""

from __future__ import annotations

import math
import secrets
import threading
from typing import Any, Callable, Iterable, Iterator

from . import _cluster
from ._errors import ConfigError, ConnectionLost, JobCanceled
from ._pickling import Batcher, dumps_function
from ._progress import Progress
from ._results import job_error, rebuild
from ._session import JobChannel, Session
from .scheduler._state import INITIAL_INPUT_CREDIT
from .transport._payload import unpack
from .transport.messages import InputBatch, JobEnded, ResultBatchView, SubmitJob

MAX_INPUT_BYTES = 256 * 1024 * 1024
MAX_BATCH_ITEMS = 1024


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
    """
    _validate(function_, inputs, func_cpu, func_ram, max_parallelism, max_retries, func_timeout, max_input_bytes)
    if image is not None and (not isinstance(image, str) or not image):
        raise ConfigError(f"image must be a container image name, got {image!r}")
    if func_gpu is not None and (not isinstance(func_gpu, int) or isinstance(func_gpu, bool) or func_gpu < 1):
        raise ConfigError(f"func_gpu must be a whole number of GPUs >= 1, got {func_gpu!r}")
    run = _JobRun(function_, inputs, func_cpu, func_ram, max_parallelism, raise_errors, spinner,
                  max_retries, func_timeout, max_input_bytes, image or "", func_gpu or 0)
    if generator:
        return _ordered(run.results()) if ordered else (value for _, value in run.results())
    if hasattr(inputs, "__len__"):
        out: list[Any] = [None] * len(inputs)  # type: ignore[arg-type]
        for index, value in run.results():
            out[index] = value
        return out
    got = dict(run.results())
    return [got[i] for i in range(len(got))]


def _ordered(results: Iterator[tuple[int, Any]]) -> Iterator[Any]:
    waiting: dict[int, Any] = {}
    nxt = 0
    for index, value in results:
        waiting[index] = value
        while nxt in waiting:
            yield waiting.pop(nxt)
            nxt += 1


def _validate(fn: Any, inputs: Any, func_cpu: Any, func_ram: Any, max_parallelism: Any, max_retries: Any,
              func_timeout: Any, max_input_bytes: Any) -> None:
    if not callable(fn):
        raise ConfigError(f"function_ must be callable, got {type(fn).__name__}")
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__iter__"):
        raise ConfigError(f"inputs must be an iterable of inputs (a list, generator...), got {type(inputs).__name__}")
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


class _JobRun:
    def __init__(self, fn: Callable[..., Any], inputs: Iterable[Any], func_cpu: int, func_ram: float | None,
                 max_parallelism: int | None, raise_errors: bool, spinner: bool, max_retries: int,
                 func_timeout: float | None, max_input_bytes: int, image: str, func_gpu: int):
        self.fn_name = getattr(fn, "__name__", type(fn).__name__)
        self.blob = dumps_function(fn)  # errors before anything is sent
        self.inputs = inputs
        self.total = len(inputs) if hasattr(inputs, "__len__") else None  # type: ignore[arg-type]
        self.func_cpu, self.func_ram = func_cpu, func_ram
        self.max_parallelism = max_parallelism
        self.raise_errors, self.spinner = raise_errors, spinner
        self.max_retries, self.func_timeout = max_retries, func_timeout
        self.max_input_bytes = max_input_bytes
        self.image, self.func_gpu = image, func_gpu

    def _target_batch(self, session: Session) -> int:
        workers = session.cluster_workers or 2
        if self.max_parallelism:
            workers = min(workers, self.max_parallelism)
        if self.total is None:
            return MAX_BATCH_ITEMS
        return max(1, min(MAX_BATCH_ITEMS, math.ceil(self.total / (4 * workers))))

    def results(self) -> Iterator[tuple[int, Any]]:
        if self.total == 0:
            return
        session = _cluster.session()
        batcher = Batcher(self.inputs, self._target_batch(session), self.max_input_bytes)
        job_id = f"{self.fn_name}-{secrets.token_urlsafe(6)}"
        first = []
        while len(first) < INITIAL_INPUT_CREDIT and (b := batcher.next_batch()) is not None:
            first.append(InputBatch(job_id, b[0], b[1], 0, b[2]))
        if not first:  # an empty generator
            return
        spec = SubmitJob(job_id, self.fn_name, self.blob, self.func_cpu,
                         int(self.func_ram * 2**30) if self.func_ram else 0, self.max_parallelism or 0,
                         self.max_retries, float(self.func_timeout or 0), self.raise_errors, self.image,
                         self.func_gpu)
        done_total = batcher.count if batcher.exhausted else None
        job = session.submit(spec, first, done_total)
        if done_total is None:
            threading.Thread(target=self._feed, args=(job, batcher), name="burla-feeder", daemon=True).start()
        yield from self._consume(job)

    def _feed(self, job: JobChannel, batcher: Batcher) -> None:
        try:
            for start, ends, payload in batcher:
                if not job.send_batch(InputBatch(job.job_id, start, ends, 0, payload)):
                    return
            job.inputs_done(batcher.count)
        except BaseException as e:  # the user's generator raised, or an input is unpicklable
            job.events.put(e)

    def _consume(self, job: JobChannel) -> Iterator[tuple[int, Any]]:
        progress = Progress(self.fn_name, self.total, enabled=self.spinner)
        finished = False
        try:
            while True:
                ev = job.events.get()
                if isinstance(ev, ResultBatchView):
                    values = unpack(ev.ends, ev.payload)
                    for err in ev.errors:
                        exc = rebuild(err)
                        if self.raise_errors:
                            raise exc
                        values[err.index - ev.start] = exc
                    job.ack()
                    progress.advance(len(values))
                    for i, value in enumerate(values):
                        yield ev.start + i, value
                elif isinstance(ev, JobEnded):
                    finished = True
                    if ev.status != "done":
                        raise job_error(ev.error)
                    return
                elif isinstance(ev, ConnectionLost):
                    finished = True
                    raise ev
                elif isinstance(ev, BaseException):
                    raise ev
        except KeyboardInterrupt:
            job.cancel("canceled by the user (Ctrl-C)")
            finished = True
            raise JobCanceled("job canceled by user (Ctrl-C); its workers were stopped") from None
        finally:
            progress.close()
            if not finished:  # an error above, or the caller dropped the generator
                job.cancel("the client stopped the job")
            job.close()
