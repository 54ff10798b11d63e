"""``burla.Executor``: a ``concurrent.futures.Executor`` whose calls run on the cluster.

An executor is one open-ended job.  Its function is ``burla._calls.ExecutorCalls``,
built once per worker (which runs the ``initializer``); each submitted call is
one input, ``(fn, args, kwargs)``, pickled by ``submit`` (so the caller's
objects are not held, and a call that cannot be pickled fails its own future).

Calls wait in ``_Pool.pending`` (cancellable) until the executor has room
(``_Pool._room``: about two calls per ``max_workers``), within the head's
credit.  The thread that frees room sends: ``submit`` itself while a slot
has no call (no hand-off on the fast path), the consumer thread when
results come back, the loop thread when the head grants credit.  A sent
call's future is RUNNING; the consumer thread resolves it from the job's
result batches.  ``shutdown`` ends the job's inputs (``InputsDone``) once
nothing is pending; a job that fails breaks the executor (``BrokenExecutor``).
"""

from __future__ import annotations

import itertools
import logging
import pickle
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any, cast

from .. import _nested
from .._calls import ExecutorCalls
from .._errors import (
    BurlaError,
    ConfigError,
    FunctionLoadError,
    InputTooBig,
    JobCanceled,
    SerializationError,
)
from .._stateful import CallableClass
from ..transport._payload import Packer, Segments, TooBig, join, pickles
from ..transport.messages import CancelJob, InputBatch, ResultBatchView, SubmitJob
from . import _cluster
from ._api import MAX_INPUT_BYTES, syncs_packages, validate_options
from ._events import Ended, Logs, Lost, Notice, Results
from ._job import _as_bytes
from ._pickling import BatchSizer, dumps_function, register_local_modules
from ._results import job_error, rebuild


class BrokenExecutor(BurlaError, futures.BrokenExecutor):
    """A ``burla.Executor`` whose job failed (its initializer raised, a call
    crashed its worker past ``max_retries``, the head went away): its calls
    not yet done fail with this, and so does every later ``submit``.  The
    job's own error is the ``__cause__``.  (Here, not in ``burla._errors``:
    it needs ``concurrent.futures``, which workers never import.)"""


BrokenExecutor.__module__ = "burla"

CANCEL_WAIT = 5.0  # seconds a Ctrl-C'd shutdown waits for the cluster to confirm the cancel
_stdlib_log = logging.getLogger("concurrent.futures")  # where the stdlib's executors report initializer errors

_live: set[_Pool] = set()  # pools whose job is open: the interpreter's exit waits for them
_live_lock = threading.Lock()
_exiting = False


def _python_exit() -> None:
    """Run by ``threading`` before ``atexit`` (so before the embedded cluster
    stops): every executor finishes the calls it was given, as the stdlib's do."""
    global _exiting  # noqa: PLW0603 (the interpreter's exit is process-wide by nature)
    _exiting = True
    with _live_lock:
        pools = list(_live)
    for pool in pools:
        pool.shutdown(wait=True)


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]  # the hook the stdlib's executors use


class Executor(futures.Executor):
    """A ``concurrent.futures.Executor`` on the current cluster (the embedded
    one when none is configured)::

        with burla.Executor(max_workers=100) as ex:
            fut = ex.submit(fn, 1, key="x")
            print(fut.result(), list(ex.map(fn, range(10))))

    ``max_workers`` bounds the calls running at once (default: as many as the
    cluster's slots allow); ``initializer(*initargs)`` runs once per worker
    before its first call (an error there breaks the executor, as in the
    stdlib).  ``func_cpu``, ``func_ram``, ``max_retries``, ``func_timeout``,
    ``image``, ``func_gpu`` and ``sync_packages`` mean what they mean for
    ``remote_parallel_map``.  Calls print to this process's stdout; a call's
    exception is raised by its future's ``result()`` with the remote
    traceback.  ``Future.cancel()`` works on calls not yet sent to the
    cluster: about two per ``max_workers`` are sent ahead.
    """

    def __init__(self, max_workers: int | None = None, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), *, func_cpu: int = 1, func_ram: float | None = None,
                 max_retries: int = 3, func_timeout: float | None = None, image: str | None = None,
                 func_gpu: int | None = None, max_input_bytes: int = MAX_INPUT_BYTES,
                 sync_packages: bool | None = None) -> None:
        if max_workers is not None:
            if not isinstance(max_workers, int) or isinstance(max_workers, bool):
                raise TypeError(f"max_workers must be an int, got {type(max_workers).__name__}")
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not isinstance(initargs, tuple):
            raise ConfigError(f"initargs must be a tuple, got {type(initargs).__name__}")
        validate_options(func_cpu, func_ram, max_workers, max_retries, func_timeout, max_input_bytes, image, func_gpu,
                         sync_packages)
        label = "the executor's initializer " + (
            f"{getattr(initializer, '__qualname__', initializer)}(*initargs)" if initializer else "")
        calls = cast(Callable[..., Any], CallableClass(ExecutorCalls, (initializer, initargs), {}, label))
        spec = SubmitJob(f"Executor-{secrets.token_urlsafe(6)}", "Executor", dumps_function(calls), func_cpu,
                         int(func_ram * 2**30) if func_ram else 0, max_workers or 0, max_retries,
                         float(func_timeout or 0), False, image or "", func_gpu or 0, parent=_nested.parent_job)
        self._pool = _Pool(spec, max_input_bytes, max_workers, syncs_packages(sync_packages))
        self._max_workers = self._pool.slots
        weakref.finalize(self, self._pool.shutdown, False)  # dropped without shutdown: end once its calls are done

    @property
    def _broken(self) -> str | bool:
        """The reason the executor is broken, else False (the stdlib's attribute)."""
        return self._pool.broken or False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        return self._pool.submit(fn, args, kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the cluster, results in order.  All calls
        are submitted at once; ``chunksize`` calls travel (and run) together."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            fs = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]
        else:
            fs = [self._pool.submit(fn, chunk, None) for chunk in _chunks(zip(*iterables, strict=False), chunksize)]

        def results() -> Iterator[Any]:
            # Holds no reference to a result it yielded (the stdlib's test_free_reference).
            try:
                fs.reverse()
                while fs:
                    if chunksize == 1:
                        yield _result_or_cancel(fs.pop(), end)
                    else:
                        chunk = _result_or_cancel(fs.pop(), end)
                        chunk.reverse()
                        while chunk:
                            yield chunk.pop()
            finally:
                for f in fs:
                    f.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls.  ``cancel_futures`` cancels those not yet sent;
        ``wait`` waits for the rest.  Ctrl-C while waiting cancels the job."""
        self._pool.shutdown(wait, cancel_futures)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        if exc_type is KeyboardInterrupt:  # Ctrl-C in the with block: nothing is left running on the cluster
            self._pool.cancel("canceled by the user (Ctrl-C)")
            return None
        return super().__exit__(exc_type, exc, tb)


class _Pool:
    """The executor's state, shared by the caller's threads, the consumer and the loop thread."""

    def __init__(self, spec: SubmitJob, max_input_bytes: int, max_workers: int | None, sync_packages: bool) -> None:
        self.max_input_bytes, self.max_workers = max_input_bytes, max_workers
        self.cv = threading.Condition(threading.RLock())  # RLock: a Future callback may submit from inside
        self.pending: deque[tuple[futures.Future[Any], bytes | Segments]] = deque()
        self.flying: dict[int, futures.Future[Any]] = {}
        self.next_index = 0
        self.closing = False  # shutdown() was called: no new calls
        self.done_sent = False
        self.broken: str | None = None
        self.ended = threading.Event()
        self.sizer = BatchSizer()
        self.session = _cluster.session()
        self.slots = max_workers or max(1, self.session.cluster_workers)
        self.job = self.session.submit(spec, [], None, sync_packages)
        self.job.on_credit = self._drain
        with _live_lock:
            _live.add(self)
        self.consumer = threading.Thread(target=self._consume, name=f"burla-executor-{spec.job_id}", daemon=True)
        self.consumer.start()

    # --- callers' side ----------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any] | None) -> futures.Future[Any]:
        self._check_open()
        fut: futures.Future[Any] = futures.Future()
        try:
            payload = self._pickle(fn, args, kwargs)
        except (SerializationError, InputTooBig) as e:
            fut.set_exception(e)
            return fut
        with self.cv:
            self._check_open()
            self.pending.append((fut, payload))
            self._drain(eager=False)
        return fut

    def _check_open(self) -> None:
        if self.broken is not None:
            raise BrokenExecutor(self.broken)
        if self.closing:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def _pickle(self, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any] | None) -> bytes | Segments:
        register_local_modules()  # helpers in modules next to the script travel by value
        packer = Packer()
        try:
            packer.add((fn, args, kwargs), self.max_input_bytes)
        except TooBig as e:
            raise InputTooBig(f"the call {_name(fn)}(...) pickles to {e.size / 2**20:.1f} MiB, over the "
                              f"{self.max_input_bytes / 2**20:.0f} MiB limit: pass a path or URL and load the "
                              "data inside the function, or raise max_input_bytes") from None
        except Exception as e:
            raise SerializationError(f"the call {_name(fn)}(...) cannot be pickled: {type(e).__name__}: {e}") from None
        return packer.take()[1]

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self.cv:
            self.closing = True
            cancelled = [fut for fut, _ in self.pending] if cancel_futures else []
            if cancel_futures:
                self.pending.clear()
            self._drain()
        for fut in cancelled:
            fut.cancel()
        if not wait or self.consumer is threading.current_thread():
            return
        try:
            while not self.ended.wait(1.0):
                if not self.consumer.is_alive():
                    break
        except KeyboardInterrupt:
            self.cancel("canceled by the user (Ctrl-C)")
            raise JobCanceled("executor canceled by the user (Ctrl-C); its workers were stopped") from None

    def cancel(self, reason: str) -> None:
        """Cancel the job: calls not sent are cancelled, running ones fail with JobCanceled."""
        with self.cv:
            self.closing = True
            pending, self.pending = [fut for fut, _ in self.pending], deque()
        for fut in pending:
            fut.cancel()
        if not self.ended.is_set():
            self.job.send_nowait(CancelJob(self.job.job_id, reason))
            self.ended.wait(CANCEL_WAIT)

    # --- sending: whoever frees room ------------------------------------------------------

    def _drain(self, eager: bool = True) -> None:
        """Send pending calls while there is room and credit (any thread).

        Self-clocked: a ``submit`` (not eager) sends at once only while some
        slot has no call; past that its call waits for the next result (or
        credit), which sends what waited in batches: a burst of tiny calls
        travels a few hundred to a message, and one call at a time still goes
        alone, at once."""
        with self.cv:
            while self.pending and self.broken is None and (eager or len(self.flying) < self.slots):
                room = self._room()
                if room <= 0 or not self.job.take_credit():
                    break
                take = min(room, self.sizer.target, -(-len(self.pending) // self.slots))
                sent: list[tuple[futures.Future[Any], bytes | Segments]] = []
                while self.pending and len(sent) < take:
                    fut, payload = self.pending.popleft()
                    if fut.set_running_or_notify_cancel():  # False: cancelled while it waited
                        sent.append((fut, payload))
                if not sent:
                    self.job.give_back_credit()
                    continue
                start = self.next_index
                for i, (fut, _) in enumerate(sent):
                    self.flying[start + i] = fut
                self.next_index += len(sent)
                ends, payload = join([p for _, p in sent])
                self.job.send_input(InputBatch(self.job.job_id, start, ends, 0, _as_bytes(payload)))
            if self.closing and not self.pending and not self.done_sent and self.broken is None:
                self.done_sent = True
                self.job.inputs_done(self.next_index)

    def _room(self) -> int:
        """Calls that may still be sent: with ``max_workers``, one running and
        one call's worth more per worker -- more when calls are quick (about
        ``BatchSizer.BATCH_SECONDS`` of them), so cancel() finds slow calls
        not yet sent while tiny ones flow."""
        if self.max_workers is None:
            return 1 << 30
        return self.max_workers * (1 + self.sizer.target) - len(self.flying)

    # --- receiving: the consumer thread -------------------------------------------------------

    def _consume(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                match self.job.next_event():
                    case Results(batch=rb):
                        self._resolve(rb)
                    case Logs() | Notice() as shown:
                        self.job.show(shown)
                    case Ended(msg=ended):
                        error = None if ended.status == "done" else job_error(ended.error)
                        return
                    case Lost(error=lost):
                        error = lost
                        return
        except BaseException as e:  # never leave futures hanging on a bug of ours
            error = e
        finally:
            self._finish(error)

    def _resolve(self, rb: ResultBatchView) -> None:
        errors = {err.index: err for err in rb.errors}
        outcomes: list[tuple[futures.Future[Any], bool, Any]] = []
        with self.cv:
            for i, data in enumerate(pickles(rb.ends, rb.payload)):
                fut = self.flying.pop(rb.start + i, None)
                if fut is not None:
                    outcomes.append((fut, *_outcome(rb.start + i, data, errors)))
        outcomes.reverse()
        while outcomes:  # in input order, holding no result once its future has it (test_free_reference)
            fut, ok, value = outcomes.pop()
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
            del fut, value
        self.job.ack()  # (after the futures: a waiting caller wakes first)
        self.sizer.observe(rb.durations)
        self._drain()

    def _finish(self, error: BaseException | None) -> None:
        with self.cv:
            if error is not None and self.broken is None:
                self.broken = _why_broken(error)
            self.closing = True
            left = list(self.flying.values()) + [fut for fut, _ in self.pending]
            self.flying.clear()
            self.pending.clear()
        self.job.close()
        if isinstance(error, FunctionLoadError):
            _stdlib_log.critical("Exception in initializer:\n%s", error)
        for fut in left:
            if isinstance(error, JobCanceled) and fut.cancel():
                continue
            if fut.done():
                continue
            if isinstance(error, JobCanceled):
                exc: BaseException = JobCanceled(str(error))
            else:
                exc = BrokenExecutor(self.broken or "the executor's job ended before this call ran")
                exc.__cause__ = error
            fut.set_exception(exc)
        with _live_lock:
            _live.discard(self)
        self.ended.set()


def _outcome(index: int, data: memoryview, errors: dict[int, Any]) -> tuple[bool, Any]:
    err = errors.get(index)
    if err is not None:
        return False, rebuild(err)
    try:
        return True, pickle.loads(data)
    except Exception as e:
        return False, SerializationError(f"a call's result could not be unpickled here: {type(e).__name__}: {e}")


def _why_broken(error: BaseException) -> str:
    if isinstance(error, FunctionLoadError):
        return f"a worker could not start the executor's calls: {error}"
    return f"the executor's job stopped: {type(error).__name__}: {error}"


def _result_or_cancel(fut: futures.Future[Any], end: float | None) -> Any:
    try:
        return fut.result(None if end is None else end - time.monotonic())
    finally:
        fut.cancel()


def _chunks(calls: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(calls, size)):
        yield chunk


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", type(fn).__name__))
