"""Where a job's input batches wait between the client and the nodes.

The head talks to a ``QueueBackend``; ``InProcessQueue`` keeps batches in
memory.  Every queue is bounded by the head's credit scheme (see
``_state.HeadConfig.input_queue_batches``): the backend itself never decides
to drop or block.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from ..transport.messages import AnyInputBatch


class QueueBackend(Protocol):
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
