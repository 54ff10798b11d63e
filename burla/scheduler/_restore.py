"""A job as a restarted head finds it in its queue backend (``backends.StoredJob``),
turned back into what ``HeadState.restore`` queues.

What is not done is queued again: each stored input batch without its done
inputs (``runs_left``), and an input that crashed a worker before travels
alone with the attempts it was charged, as after a ``BatchLost``.  Results
the client has not acknowledged are kept to be sent again when it resumes.
Nothing is unpickled: batches are cut as ``_batches`` cuts them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..transport.messages import (
    AnyInputBatch,
    AnyResultBatch,
    InputBatchView,
    JobEnded,
    ResultBatchView,
    SubmitJob,
    decode,
    payload_bytes,
)
from ._batches import sub_batch
from .backends import StoredJob


class DamagedJob(ValueError):
    """The backend's record of a job cannot be read back (written by another version?)."""


@dataclass
class Restored:
    spec: SubmitJob
    queue: list[AnyInputBatch]  # in input order
    received: int  # inputs the client had sent (the backend holds every one not done)
    delivered: int  # inputs with a final result
    total: int | None
    acked: int  # result batches the client acknowledged
    results: list[AnyResultBatch]  # stored results after those, oldest first
    ended: JobEnded | None  # it ended: the client is owed ``results``, then this


def restored(stored: StoredJob) -> Restored:
    try:
        spec = decode(stored.spec)
        if not isinstance(spec, SubmitJob):
            raise DamagedJob(f"its spec is a {type(spec).__name__}")
        queue: list[AnyInputBatch] = []
        received = _last_done(stored.done_bits) + 1
        for start in sorted(stored.inputs):
            batch = decode(stored.inputs[start])
            if not isinstance(batch, InputBatchView) or batch.start != start or not batch.ends:
                raise DamagedJob(f"its input batch at {start} is a {type(batch).__name__}")
            received = max(received, start + len(batch.ends))
            queue += runs_left(batch, stored)
        results = [decode(blob) for blob in stored.results]
        if not all(isinstance(r, ResultBatchView) for r in results):
            raise DamagedJob("a stored result is not a ResultBatch")
        ended = decode(stored.ended) if stored.ended else None
        if ended is not None and not isinstance(ended, JobEnded):
            raise DamagedJob(f"its end is a {type(ended).__name__}")
    except (ValueError, TypeError) as e:  # msgspec.DecodeError is a ValueError
        raise DamagedJob(f"job {stored.job_id}: {e}") from e
    total = stored.total if stored.total >= 0 else None
    return Restored(spec, queue, received, stored.done, total, stored.acked, results, ended)  # type: ignore[arg-type]


def runs_left(batch: InputBatchView, stored: StoredJob) -> list[AnyInputBatch]:
    """``batch`` without its done inputs: runs of consecutive inputs to do, where an
    input charged with crashes travels alone, with its attempts."""
    n = len(batch.ends)
    todo = [i for i in range(n) if not stored.is_done(batch.start + i)]
    if len(todo) == n and not any(stored.attempts.get(batch.start + i) for i in range(n)):
        return [batch]  # untouched: forwarded as it was received
    payload = payload_bytes(batch.payload)
    out: list[AnyInputBatch] = []
    lo = 0
    while lo < len(todo):
        i = todo[lo]
        attempts = stored.attempts.get(batch.start + i, 0)
        hi = lo + 1
        if not attempts:
            while hi < len(todo) and todo[hi] == todo[hi - 1] + 1 and not stored.attempts.get(batch.start + todo[hi]):
                hi += 1
        out.append(sub_batch(batch, payload, i, todo[hi - 1] + 1, attempts))
        lo = hi
    return out


def _last_done(bits: bytes) -> int:
    """The highest input index whose bit is set, or -1."""
    for byte in range(len(bits) - 1, -1, -1):
        if bits[byte]:
            return byte * 8 + 7 - (bits[byte] & -bits[byte]).bit_length() + 1
    return -1
