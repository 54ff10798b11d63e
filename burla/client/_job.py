"""One ``remote_parallel_map`` call: submit, feed inputs, consume results.

``JobRun.results()`` yields ``(input index, value)`` as result batches arrive.
Inputs that do not fit in the first write are sent by a ``Feeder`` thread the
run owns: it stops when the job ends, and the run joins it on the way out.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any, cast

from .. import _nested
from .._errors import ConfigError, ConnectionLost, JobCanceled
from ..transport._payload import Segments
from ..transport.messages import INITIAL_INPUT_CREDIT, InputBatch, SubmitJob
from . import _cluster
from ._detached import Job
from ._events import Abandoned, Ended, FeedFailed, Logs, Lost, Notice, Results, Uploaded
from ._pickling import Batcher, dumps_function
from ._progress import Progress
from ._results import job_error, values_of
from ._session import JobChannel, Session

FEEDER_JOIN_TIMEOUT = 1.0  # seconds to wait for the feeder after the job ended (it may sit in the user's generator)


@dataclass(frozen=True)
class JobOptions:
    func_cpu: int
    func_ram: float | None
    max_parallelism: int | None
    raise_errors: bool
    spinner: bool
    max_retries: int
    func_timeout: float | None
    max_input_bytes: int
    image: str
    func_gpu: int
    sync_packages: bool = True
    detach: bool = False


class Feeder:
    """The thread that streams a job's remaining inputs under the head's credit."""

    def __init__(self, job: JobChannel, batcher: Batcher) -> None:
        self.job, self.batcher = job, batcher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"burla-feeder-{job.job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for start, ends, payload in self.batcher:
                batch = InputBatch(self.job.job_id, start, ends, 0, _as_bytes(payload))
                if self._stop.is_set() or not self.job.send_batch(batch):
                    return
            self.job.inputs_done(self.batcher.count)
        except ConnectionLost:
            return  # the consumer sees the same loss
        except BaseException as e:  # the user's generator raised, or an input is unpicklable
            self.job.put(FeedFailed(e))

    def stop(self) -> None:
        """Ask the thread to stop after its current batch, and wait for it a
        little (it may be inside the user's generator, which nothing can interrupt)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(FEEDER_JOIN_TIMEOUT)


class JobRun:
    def __init__(self, fn: Callable[..., Any], inputs: Iterable[Any], options: JobOptions) -> None:
        self.fn_name = getattr(fn, "__name__", type(fn).__name__)
        self.blob = dumps_function(fn)  # errors before anything is sent
        self.inputs = inputs
        self.total = len(inputs) if isinstance(inputs, Sized) else None
        self.options = options
        self.abandoned = threading.Event()
        self._channel: JobChannel | None = None

    def abandon(self) -> None:
        """From any thread: the caller gives up; ``results()`` ends and the job is canceled."""
        self.abandoned.set()
        if self._channel is not None:
            self._channel.put(Abandoned())

    def _spec(self, job_id: str) -> SubmitJob:
        o = self.options
        return SubmitJob(job_id, self.fn_name, self.blob, o.func_cpu, int(o.func_ram * 2**30) if o.func_ram else 0,
                         o.max_parallelism or 0, o.max_retries, float(o.func_timeout or 0), o.raise_errors, o.image,
                         o.func_gpu, parent=_nested.parent_job, detach=o.detach)

    def results(self) -> Iterator[tuple[int, Any]]:
        if self.total == 0:
            return
        session = _cluster.session()
        if self.options.detach:
            _refuse_detach(session)
        batcher = Batcher(self.inputs, self.options.max_input_bytes)
        job_id = f"{self.fn_name}-{secrets.token_urlsafe(6)}"
        first: list[InputBatch] = []
        while len(first) < INITIAL_INPUT_CREDIT and (b := batcher.next_batch()) is not None:
            first.append(InputBatch(job_id, b[0], b[1], 0, _as_bytes(b[2])))
        if not first:  # an empty generator
            return
        done_total = batcher.count if batcher.exhausted else None
        job = session.submit(self._spec(job_id), first, done_total, self.options.sync_packages)
        self._channel = job
        if self.abandoned.is_set():
            job.put(Abandoned())
        feeder = Feeder(job, batcher) if done_total is None else None
        if feeder is not None:
            feeder.start()
        try:
            if self.options.detach:
                self._upload(job)
                return
            yield from self._consume(job, batcher)
        finally:
            if feeder is not None:
                feeder.stop()

    def detached(self) -> Job:
        """Submit the job detached; return its handle once the head holds every input."""
        for _ in self.results():
            pass  # (results() yields nothing for a detached job)
        if self._channel is None:  # no inputs (an empty list or generator)
            raise ConfigError("detach=True: the inputs were empty, so there is no job to detach")
        return Job(self._channel.job_id)

    def _upload(self, job: JobChannel) -> None:
        """Wait until the head holds every input (Ctrl-C or an error before: the job is canceled)."""
        finished = False
        try:
            while True:
                match job.next_event():
                    case Uploaded():
                        finished = True
                        job.show(Notice(f"done uploading inputs: job {job.job_id} runs on without this client; "
                                        f"burla.job({job.job_id!r}).results() takes its results"))
                        return
                    case Logs() | Notice() as shown:
                        job.show(shown)
                    case Ended(msg=ended):
                        finished = True
                        if ended.status != "done":
                            raise job_error(ended.error)
                        return  # done already: its results wait for burla.job(...).results()
                    case Lost(error=error):
                        finished = True
                        raise error
                    case FeedFailed(error=error):
                        raise error
                    case Abandoned():
                        return
                    case Results():
                        pass  # (a detached job's results go to its readers)
        except KeyboardInterrupt:
            job.cancel("canceled by the user (Ctrl-C) before every input was uploaded")
            finished = True
            raise JobCanceled("job canceled by user (Ctrl-C) before every input was uploaded") from None
        finally:
            if not finished:
                job.cancel("the client stopped before every input was uploaded")
            job.close()

    def _consume(self, job: JobChannel, batcher: Batcher) -> Iterator[tuple[int, Any]]:
        progress = Progress(self.fn_name, self.total, enabled=self.options.spinner and not _nested.parent_job)
        finished = False
        try:
            while True:
                match job.next_event():
                    case Results(batch=rb):
                        values = values_of(rb, self.options.raise_errors)
                        job.ack()
                        batcher.observe(rb.durations)
                        progress.advance(len(values))
                        for i, value in enumerate(values):
                            yield rb.start + i, value
                    case Logs() | Notice() as shown:
                        job.show(shown)
                    case Ended(msg=ended):
                        finished = True
                        if ended.status != "done":
                            raise job_error(ended.error)
                        return
                    case Lost(error=error):
                        finished = True
                        raise error
                    case FeedFailed(error=error):
                        raise error
                    case Abandoned():
                        return  # not finished: canceled below
        except KeyboardInterrupt:
            job.cancel("canceled by the user (Ctrl-C)")
            finished = True
            raise JobCanceled("job canceled by user (Ctrl-C); its workers were stopped") from None
        finally:
            progress.close()
            if not finished:  # an error above, or the caller dropped the generator
                job.cancel("the client stopped the job")
            job.close()


def _refuse_detach(session: Session) -> None:
    if _cluster.is_embedded(session):
        raise ConfigError("detach=True needs a cluster that outlives this process: the embedded cluster stops "
                          "with it. Start one with `burla up cluster.yaml` (with `queue: {type: redis}` its detached "
                          "jobs also survive a head restart), or burla.connect() to one")


def _as_bytes(payload: bytes | Segments) -> bytes:
    """A batch payload for an InputBatch: Segments (pickles not yet joined) are
    written as they are by encode_parts, so they stand in for bytes, uncopied."""
    return cast(bytes, payload)
