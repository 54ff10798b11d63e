"""What a job's channel carries from the client's loop thread to the caller.

Results and the job's end arrive from the head; ``Lost`` when the connection
(or the loop thread) is gone; ``FeedFailed`` when the user's input iterator
raised or an input could not be pickled, on the feeder thread.  Typed values,
never exceptions passed around as messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import ConnectionLost
from ..transport.messages import JobEnded, ResultBatchView


@dataclass(frozen=True)
class Results:
    batch: ResultBatchView


@dataclass(frozen=True)
class Ended:
    msg: JobEnded


@dataclass(frozen=True)
class Lost:
    error: ConnectionLost


@dataclass(frozen=True)
class FeedFailed:
    error: BaseException


JobEvent = Results | Ended | Lost | FeedFailed
