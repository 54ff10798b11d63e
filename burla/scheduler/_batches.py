"""Cutting input batches without unpickling them: what is left of a batch
whose first results already came back, and a lost batch split so the input
that crashed its worker travels alone (and alone is charged the retry)."""

from __future__ import annotations

from ..transport.messages import AnyInputBatch, InputBatch, payload_bytes


def sub_batch(batch: AnyInputBatch, payload: bytes, lo: int, hi: int, attempt: int) -> InputBatch:
    base = batch.ends[lo - 1] if lo else 0
    ends = [e - base for e in batch.ends[lo:hi]]
    return InputBatch(batch.job_id, batch.start + lo, ends, attempt, payload[base : batch.ends[hi - 1]])


def remaining(batch: AnyInputBatch, done: int) -> AnyInputBatch:
    """``batch`` without its first ``done`` inputs (their results were delivered)."""
    if not done:
        return batch
    return sub_batch(batch, payload_bytes(batch.payload), done, len(batch.ends), batch.attempt)


def split_around(batch: AnyInputBatch, crashed_index: int) -> list[AnyInputBatch]:
    """Split a lost batch so the input that crashed travels alone (as new
    batches: the received frame of ``batch`` no longer describes them).
    Only the crashed input keeps its attempt count."""
    i = crashed_index - batch.start
    if not 0 <= i < len(batch.ends):
        return [batch]
    payload = payload_bytes(batch.payload)
    n = len(batch.ends)
    parts: list[AnyInputBatch] = []
    if i > 0:
        parts.append(sub_batch(batch, payload, 0, i, 0))
    parts.append(sub_batch(batch, payload, i, i + 1, batch.attempt))
    if i + 1 < n:
        parts.append(sub_batch(batch, payload, i + 1, n, 0))
    return parts


def crash_message(index: int, attempts: int, reason: str) -> str:
    return f"input {index} crashed its worker {attempts} time(s) (last: {reason}); it was not retried again"
