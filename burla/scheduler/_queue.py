"""Where a job's input batches wait, in the head, between the client and the nodes.

``HeadState`` schedules from a ``BatchQueue`` (its working queue, always in
memory: ``InProcessQueue``); the durable copy a restarted head would need is
the ``backends.QueueBackend``'s, written by the journal.  Every queue is
bounded by the head's credit scheme (see ``_state.HeadConfig.input_queue_batches``):
the queue itself never decides to drop or block.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from ..transport.messages import AnyInputBatch


class BatchQueue(Protocol):
    def create(self, job_id: str) -> None: ...
    def push(self, job_id: str, batch: AnyInputBatch) -> None: ...
    def push_front(self, job_id: str, batch: AnyInputBatch) -> None:
        """Put a retried batch ahead of fresh ones."""

    def pop(self, job_id: str) -> AnyInputBatch | None: ...
    def length(self, job_id: str) -> int: ...
    def delete(self, job_id: str) -> None: ...


class InProcessQueue:
    def __init__(self) -> None:
        self._queues: dict[str, deque[AnyInputBatch]] = {}

    def create(self, job_id: str) -> None:
        self._queues[job_id] = deque()

    def push(self, job_id: str, batch: AnyInputBatch) -> None:
        self._queues[job_id].append(batch)

    def push_front(self, job_id: str, batch: AnyInputBatch) -> None:
        self._queues[job_id].appendleft(batch)

    def pop(self, job_id: str) -> AnyInputBatch | None:
        q = self._queues[job_id]
        return q.popleft() if q else None

    def length(self, job_id: str) -> int:
        return len(self._queues[job_id])

    def delete(self, job_id: str) -> None:
        self._queues.pop(job_id, None)
