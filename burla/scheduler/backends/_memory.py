"""The in-process backend: jobs live as long as the head's process.

Done inputs are kept as sorted, merged ranges (results come back as runs of
consecutive inputs), so a result costs O(log batches), not O(its inputs).
"""

from __future__ import annotations

import copy
from bisect import bisect_left, bisect_right, insort

from . import Blob, Step, StoredJob


class Ranges:
    """Disjoint half-open ranges of input indices, sorted and merged."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlaps(self, lo: int, hi: int) -> bool:
        i = bisect_right(self.starts, lo) - 1
        if i >= 0 and self.ends[i] > lo:
            return True
        return i + 1 < len(self.starts) and self.starts[i + 1] < hi

    def add(self, lo: int, hi: int) -> None:
        """Add [lo, hi), which overlaps none of the ranges."""
        i = bisect_left(self.starts, lo)
        if i > 0 and self.ends[i - 1] == lo:  # joins the range before
            i -= 1
            self.ends[i] = hi
        else:
            self.starts.insert(i, lo)
            self.ends.insert(i, hi)
        if i + 1 < len(self.starts) and self.starts[i + 1] == hi:  # and the one after
            self.ends[i] = self.ends.pop(i + 1)
            del self.starts[i + 1]

    def total(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends, strict=True))

    def bits(self) -> bytes:
        """As a bitmap, most significant bit first (Redis' SETBIT order)."""
        out = bytearray((self.ends[-1] + 7) // 8 if self.ends else 0)
        for s, e in zip(self.starts, self.ends, strict=True):
            for i in range(s, e):
                out[i >> 3] |= 0x80 >> (i & 7)
        return bytes(out)


class _Job:
    def __init__(self, job_id: str, spec: bytes):
        self.stored = StoredJob(job_id, spec)
        self.left: dict[int, int] = {}  # input batch start -> its inputs not done
        self.sizes: dict[int, int] = {}  # input batch start -> inputs in it
        self.starts: list[int] = []  # of the stored input batches, sorted
        self.done = Ranges()
        self.writes: dict[int, str] = {}  # result start -> the write_id that stored it


class MemoryBackend:
    durable = False
    where = "memory"

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def create_job(self, job_id: str, spec: bytes) -> None:
        self._jobs.setdefault(job_id, _Job(job_id, spec))

    async def add_inputs(self, job_id: str, start: int, size: int, batch: Blob) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.stored.ended or start in job.sizes:
            return
        insort(job.starts, start)
        job.stored.inputs[start] = batch
        job.sizes[start] = job.left[start] = size

    async def inputs_done(self, job_id: str, total: int) -> None:
        if (job := self._jobs.get(job_id)) is not None:
            job.stored.total = total

    async def store_result(self, job_id: str, start: int, n: int, result: Blob, write_id: str = "") -> bool:
        job = self._jobs.get(job_id)
        end = start + n
        if job is None or n < 1:
            return False
        if job.done.overlaps(start, end):
            return bool(write_id) and job.writes.get(start) == write_id  # this write, sent again
        job.done.add(start, end)
        job.stored.results.append(result)
        if write_id:
            job.writes[start] = write_id
        at = max(0, bisect_right(job.starts, start) - 1)  # the batches these inputs came from
        while at < len(job.starts) and (s := job.starts[at]) < end:
            covered = min(end, s + job.sizes[s]) - max(start, s)
            if covered > 0 and (left := job.left[s] - covered) <= 0:
                del job.stored.inputs[s], job.sizes[s], job.left[s], job.starts[at]
                continue
            if covered > 0:
                job.left[s] = left
            at += 1
        return True

    async def set_attempts(self, job_id: str, index: int, attempts: int) -> None:
        if (job := self._jobs.get(job_id)) is not None:
            job.stored.attempts[index] = attempts

    async def results_acked(self, job_id: str, upto: int) -> None:
        if (job := self._jobs.get(job_id)) is not None and upto > job.stored.acked:
            del job.stored.results[: upto - job.stored.acked]
            job.stored.acked = upto

    async def end_job(self, job_id: str, ended: Blob) -> None:
        if (job := self._jobs.get(job_id)) is not None:
            job.stored.ended = bytes(ended)
            job.stored.inputs.clear()
            job.sizes.clear()
            job.left.clear()
            job.starts.clear()

    async def delete_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def write(self, steps: list[Step]) -> list[bool]:
        out = []
        for step in steps:
            answer = await getattr(self, step.name)(*step.args)
            out.append(answer if isinstance(answer, bool) else True)
        return out

    async def job_ids(self) -> list[str]:
        return list(self._jobs)

    async def load(self, job_id: str) -> StoredJob | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        stored = copy.copy(job.stored)
        stored.inputs, stored.attempts = dict(stored.inputs), dict(stored.attempts)
        stored.results, stored.done_bits = list(stored.results), job.done.bits()
        return stored
