"""The worker process: runs the user's function on inputs, nothing else.

The main thread runs user code; a reader thread receives messages, a
heartbeat thread keeps the node's link alive while a long call runs, and the
log flusher ships printed lines.  The process exits as soon as its node
connection closes, so workers never outlive their node daemon.

The worker writes the index of the input it is running, and when it started,
into a small shared status file (16 bytes) before each call: if the process
dies mid-call, the node reads it to tell the head which input crashed (the
rest of the batch is requeued without being charged a retry), and the node's
watchdog kills a call that ignores ``func_timeout`` (a C call that never
returns to the interpreter cannot be interrupted by the worker's alarm).
"""

from __future__ import annotations

import argparse
import importlib
import mmap
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import _nested
from .._errors import SerializationError
from .._stateful import CallableClass
from ..transport._blocking import BlockingConnection
from ..transport._codec import (
    EndJob,
    Heartbeat,
    InputBatchView,
    ItemError,
    JobSetupFailed,
    LogAck,
    LogBatch,
    StartJob,
    WorkerHello,
)
from ..transport._payload import pickles
from ._capture import LineCapture
from ._status import LOADING, STATUS
from ._stream import ResultStream

LOG_WINDOW = 4  # log batches on their way to the client, not yet acknowledged; past it print() blocks


class _CallTimedOut(Exception):
    pass


class LogWindow:
    """At most ``size`` log batches unacknowledged by the client (``LogAck``):
    ``acquire`` blocks the log flusher, and so ``print``, past that.  Reset
    when a job starts or ends (acks of a job that ended never come)."""

    def __init__(self, size: int = LOG_WINDOW) -> None:
        self.size = size
        self._unacked = 0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        """Wait for room for one more batch."""
        with self._cond:
            while self._unacked >= self.size:
                self._cond.wait()
            self._unacked += 1

    def acked(self, batches: int) -> None:
        with self._cond:
            self._unacked = max(0, self._unacked - batches)
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._unacked = 0
            self._cond.notify_all()


def _on_alarm(signum: int, frame: object) -> None:
    raise _CallTimedOut()


class Worker:
    def __init__(self, conn: BlockingConnection, status: mmap.mmap):
        self.conn = conn
        self.status = status
        self.job_id: str | None = None
        self.function: Callable[..., Any] | None = None
        self.timeout = 0.0
        self.capture = LineCapture(self._send_logs)
        self.logs = LogWindow()
        self.results = ResultStream(conn.send, self.capture.flush)
        self._baseline = _Baseline()

    def _send_logs(self, lines: list[Any]) -> None:
        job_id = self.job_id
        if job_id is None:
            return
        self.logs.acquire()
        if self.job_id == job_id:  # the job may have ended while we waited
            self.conn.send(LogBatch(job_id, lines))

    def handle(self, msg: object) -> None:
        match msg:
            case StartJob(job_id=job_id, function=blob, func_timeout=timeout, paths=paths):
                self.logs.reset()
                self.job_id, self.timeout = job_id, timeout
                _nested.parent_job = job_id
                if paths:  # the job's environment (undone by reset(): _Baseline restores sys.path)
                    sys.path[:0] = [p for p in paths if p not in sys.path]
                    importlib.invalidate_caches()
                STATUS.pack_into(self.status, 0, LOADING, time.monotonic())  # a death here is the function's
                try:
                    loaded = cloudpickle.loads(blob)
                except BaseException as e:
                    loaded = None
                    self.conn.send(JobSetupFailed(job_id, _describe_load_failure(e)))
                if isinstance(loaded, CallableClass):  # a stateful worker: its instance, built once here
                    spec, loaded = loaded, None
                    try:
                        loaded = spec.build()
                    except BaseException as e:
                        self.conn.send(JobSetupFailed(job_id, _describe_build_failure(spec.label, e)))
                self.function = loaded
                STATUS.pack_into(self.status, 0, -1, 0.0)
            case InputBatchView() as batch if batch.job_id == self.job_id and self.function is not None:
                self.run(batch)
            case EndJob():
                self.reset()

    def run(self, batch: InputBatchView) -> None:
        """Run the batch's calls; their results stream out as they finish (``_stream``)."""
        fn = self.function
        self.results.begin(batch.job_id, batch.start)
        for i, data in enumerate(pickles(batch.ends, batch.payload)):
            index = batch.start + i
            # Named before its input is unpickled: an input whose unpickling kills the
            # process (os._exit in __reduce__) is charged its retries like any crash.
            STATUS.pack_into(self.status, 0, index, time.monotonic())
            self.capture.index = index
            t0 = time.perf_counter()
            error: ItemError | None = None
            try:
                args = _load_input(index, data)
                if self.timeout:
                    signal.setitimer(signal.ITIMER_REAL, self.timeout)
                try:
                    result = fn(*args) if isinstance(args, tuple) else fn(args)  # type: ignore[misc]  # fn is set before any batch runs
                finally:
                    if self.timeout:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except _CallTimedOut:
                error = ItemError(index, "CallTimeout", f"call exceeded func_timeout={self.timeout:g}s", b"", True)
                result = None
            except BaseException as e:
                error = _item_error(index, e)
                result = None
            self.results.add(index, result, error, time.perf_counter() - t0)
        sys.stdout.flush()
        sys.stderr.flush()
        self.results.finish()
        self.capture.index = -1
        STATUS.pack_into(self.status, 0, -1, 0.0)

    def reset(self) -> None:
        """Forget the job: drop the function and undo cwd/env/sys.path changes.

        Imported modules stay: re-importing C extensions (numpy...) in one
        process is unsafe, and a warm import cache is what makes the next job
        start in milliseconds.  No gc.collect() here: a full collection costs
        ~3 ms and would delay the next job (reference counting already frees
        the job's objects; cycles go at the next automatic collection)."""
        self.job_id, self.function, self.timeout = None, None, 0.0
        _nested.parent_job = ""
        self.logs.reset()
        self._baseline.restore()


class _Baseline:
    def __init__(self) -> None:
        self.path = list(sys.path)
        self.cwd = os.getcwd()
        self.environ = dict(os.environ)

    def restore(self) -> None:
        sys.path[:] = self.path
        os.chdir(self.cwd)
        if dict(os.environ) != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)


def _load_input(index: int, data: memoryview) -> Any:
    """One input, unpickled inside its call's ``try``: one that cannot be (its
    ``__reduce__`` raises, a module is missing here) fails alone, as its own
    error, instead of crashing the worker with the whole batch (issue 11)."""
    try:
        return pickle.loads(data)
    except Exception as e:
        raise SerializationError(f"input {index} could not be unpickled on the worker: {type(e).__name__}: {e}") from e


def _user_traceback(e: BaseException) -> str:
    """``e``'s traceback from the user's code on: our own frame is dropped (from ``e`` too)."""
    tb = e.__traceback__.tb_next if e.__traceback__ else None
    return "".join(traceback.format_exception(type(e), e.with_traceback(tb), tb))


def _item_error(index: int, e: BaseException) -> ItemError:
    text = _user_traceback(e)
    try:
        from tblib import pickling_support

        pickling_support.install(e)
        blob = cloudpickle.dumps(e)
    except Exception:
        blob = b""
    name = f"{type(e).__module__}.{type(e).__qualname__}"
    return ItemError(index, name, text, blob)


def _describe_load_failure(e: BaseException) -> str:
    hint = ""
    if isinstance(e, (ModuleNotFoundError, ImportError)):
        hint = (" (the function needs a module the workers do not have: install it on the nodes, "
                "or keep it as a local .py file next to your script so burla ships it)")
    return f"workers could not load the function: {type(e).__name__}: {e}{hint}"


def _describe_build_failure(label: str, e: BaseException) -> str:
    text = _user_traceback(e).rstrip()  # from the user's __init__ on
    return f"{label} failed on a worker: {type(e).__name__}: {e}\n{text}"


def _start_threads(conn: BlockingConnection, inbox: queue.SimpleQueue[object], logs: LogWindow,
                   interval: float) -> None:
    def read() -> None:
        try:
            while True:
                msg = conn.recv()
                if isinstance(msg, LogAck):  # here, not in the inbox: the main thread may be blocked in print()
                    logs.acked(msg.batches)
                else:
                    inbox.put(msg)
        except Exception:
            os._exit(0)  # node gone: never outlive it

    def beat() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                conn.send(Heartbeat())
            except Exception:
                os._exit(0)

    threading.Thread(target=read, name="burla-reader", daemon=True).start()
    threading.Thread(target=beat, name="burla-heartbeat", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="burla-worker")
    p.add_argument("--node", required=True, help="the node daemon's address: HOST:PORT or unix:PATH")
    p.add_argument("--worker-id", type=int, required=True)
    p.add_argument("--status-file", required=True)
    args = p.parse_args(argv)
    token = os.environ.pop("BURLA_TOKEN", "")
    head = os.environ.pop("BURLA_CLUSTER_HEAD", "")
    ca = os.environ.pop("BURLA_CLUSTER_CA", "")
    if head:  # remote_parallel_map inside the function runs on this cluster, as a child of its job
        _nested.cluster = (head, token, ca)
    with open(args.status_file, "r+b") as f:
        status = mmap.mmap(f.fileno(), STATUS.size)
    conn = BlockingConnection.connect(args.node, token)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the client
    worker = Worker(conn, status)
    conn.send(WorkerHello(args.worker_id, os.getpid()))
    inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
    _start_threads(conn, inbox, worker.logs, conn.config.heartbeat_interval)
    worker.capture.install()
    worker._baseline = _Baseline()
    while True:
        worker.handle(inbox.get())


if __name__ == "__main__":
    main()
