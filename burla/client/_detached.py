"""Detached jobs: ``remote_parallel_map(..., detach=True)`` and ``burla.job(job_id)``.

A detached job runs on without its client once the head holds every input.
Its results wait at the head (and in its queue backend) for a client that
attaches (``Job.results()``): each is yielded once it reached a reader that
took it, and one a reader received but did not take (it died, or stopped
iterating) is given to the next.  Up to ``HeadConfig.detached_bytes`` of
results wait while no one reads (the job pauses past that), and for
``HeadConfig.retention`` seconds after it ended; then they are dropped and
the job says so (``ResultsExpired``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._errors import JobNotFound
from ..transport.messages import CancelJob, JobError
from . import _cluster
from ._events import Ended, Logs, Lost, Notice, Results
from ._results import job_error, values_of


@dataclass(frozen=True)
class JobStatus:
    """``state``: running, waiting (its head restarted and waits for its client to send the
    rest of its inputs), done, failed, canceled, expired (its results were dropped) or unknown."""

    job_id: str
    state: str
    total: int | None  # None: not every input sent yet
    done: int  # inputs with a result
    waiting: int  # results no client has taken yet
    error: str = ""  # why it failed, was canceled or expired


class Job:
    """A detached job on the current cluster (``burla.job(job_id)``)."""

    def __init__(self, job_id: str) -> None:
        if not isinstance(job_id, str) or not job_id:
            raise TypeError(f"burla.job() takes a job id (a str), got {job_id!r}")
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"burla.job({self.job_id!r})"

    def results(self, raise_errors: bool = True) -> Iterator[Any]:
        """Yield the results no client has taken yet, then the rest as they come, until the
        job ends.  A failed call raises its exception (``raise_errors=False``: it is yielded
        in the result's place); a job that failed or was canceled raises that at the end;
        ``ResultsExpired`` once its results passed the head's retention; ``JobNotFound``
        when the head has no such job."""
        channel = _cluster.session().attach(self.job_id)
        try:
            while True:
                match channel.next_event():
                    case Results(batch=rb):
                        values = values_of(rb, raise_errors)
                        channel.ack()
                        yield from values
                    case Logs() | Notice() as shown:
                        channel.show(shown)
                    case Ended(msg=ended):
                        if ended.status != "done":
                            raise _ended_error(ended.error)
                        return
                    case Lost(error=error):
                        raise error
        finally:
            channel.close()

    def status(self) -> JobStatus:
        info = _cluster.session().query(self.job_id)
        return JobStatus(self.job_id, info.state, info.total if info.total >= 0 else None, info.done, info.waiting,
                         info.error.message if info.error else "")

    def cancel(self) -> JobStatus:
        """Stop the job (its results so far stay to be taken); a job that ended is forgotten,
        with its results.  Returns its status after."""
        session = _cluster.session()
        session.post(CancelJob(self.job_id, "canceled through burla.job(...).cancel()"))
        return self.status()  # (answered after the cancel: one connection, in order)


def _ended_error(error: JobError | None) -> BaseException:
    if error is not None and error.kind == "JobNotFound":
        return JobNotFound(error.message)
    return job_error(error)


def job(job_id: str) -> Job:
    """The detached job ``job_id`` of the current cluster: ``.results()``, ``.status()``, ``.cancel()``."""
    return Job(job_id)
