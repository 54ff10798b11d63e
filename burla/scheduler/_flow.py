"""A job's flow control at the head: how much it may have in flight, how much
the client may send, and whether its batches are worth prefetching.  Pure
functions of the head's configuration and the job's record (``_state``)."""

from __future__ import annotations

from ._records import HeadConfig, JobState


def window(cfg: HeadConfig, job: JobState) -> int:
    """Result batches the job may have in flight or unacknowledged: grows with its slots."""
    return cfg.result_window + 2 * cfg.prefetch_per_worker * job.workers


def can_send(cfg: HeadConfig, job: JobState, queued: int) -> bool:
    """A detached job's results wait at the head for a client: it pauses at ``detached_bytes``."""
    return (queued > 0 and len(job.inflight) + job.unacked < window(cfg, job)
            and job.resend_bytes < cfg.detached_bytes)


def prefetches(cfg: HeadConfig, job: JobState) -> bool:
    """A second batch per slot only while the job's batches are quick (``HeadConfig.prefetch_below``)."""
    return job.call_seconds * job.received / max(1, job.batches_in) < cfg.prefetch_below


def credit_room(cfg: HeadConfig, job: JobState, queued: int) -> int:
    """Batches the client may send now: up to a queue that grows with the job's
    slots, and within its byte budget (estimated from the largest batch seen;
    none before the first batch shows its size).  While the client still holds
    credit, room is granted a quarter of the queue at a time."""
    if job.total is not None or not job.max_batch_bytes:
        return 0
    queue_cap = max(cfg.input_queue_batches, cfg.prefetch_per_worker * job.workers)
    by_count = queue_cap - queued - job.credit_out
    by_bytes = (cfg.job_bytes - job.held_bytes) // job.max_batch_bytes - job.credit_out
    room = max(0, min(by_count, by_bytes))
    if job.credit_out and room < queue_cap // 4:
        return 0  # the client can still send: grant in chunks, not one message per batch
    return room
