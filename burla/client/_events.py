"""What a job's channel carries from the client's loop thread to the caller.

Results, print output and the job's end arrive from the head, in the order
the head sent them; ``Lost`` when the connection
(or the loop thread) is gone; ``FeedFailed`` when the user's input iterator
raised or an input could not be pickled, on the feeder thread; ``Abandoned``
when the caller gave up on the job.  Typed values,
never exceptions passed around as messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import ConnectionLost
from ..transport.messages import JobEnded, LogLine, ResultBatchView


@dataclass(frozen=True)
class Results:
    batch: ResultBatchView


@dataclass(frozen=True)
class Logs:
    """Lines the job's calls printed, for the caller's thread to write: a stdout
    that blocks (a pager, a slow pipe) then stalls the caller and, through the
    log window, the printing workers -- never the loop thread's heartbeats."""

    lines: list[LogLine]


@dataclass(frozen=True)
class Notice:
    text: str


@dataclass(frozen=True)
class Ended:
    msg: JobEnded


@dataclass(frozen=True)
class Lost:
    error: ConnectionLost


@dataclass(frozen=True)
class FeedFailed:
    error: BaseException


@dataclass(frozen=True)
class Uploaded:
    """A detached job's head holds every input: its client may go."""


@dataclass(frozen=True)
class Abandoned:
    """The caller stopped waiting (an async caller's task was cancelled): cancel the job."""


JobEvent = Results | Logs | Notice | Ended | Lost | FeedFailed | Abandoned | Uploaded
