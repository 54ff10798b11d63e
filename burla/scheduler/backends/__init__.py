"""Queue backends: what a job needs to survive its head, kept outside the head.

The head's scheduling core (``_state.HeadState``) works on memory.  A
``QueueBackend`` keeps the durable copy of each job, written by the head's
I/O layer before the step it records is made visible:

- the job's spec, function included (``SubmitJob``, encoded);
- its input batches with any input not done yet, by start index (queued or
  in flight on a node: after a head restart what is not done is queued
  again);
- attempts per input (crashes charged against ``max_retries``);
- which inputs are done (a bitmap: one bit per input), and the total once
  the client has sent them all;
- results the client has not acknowledged, in the order they were stored;
- once it ended, how (the JobEnded its client is owed after those results).

A result is final once ``store_result`` has returned True: in one atomic
step it checked that none of its inputs was done, marked them done and kept
the result.  A second result for any of those inputs (a rerun by a node that
held them when the head died) is refused and dropped.  The client
acknowledges results by count, in order; ``results_acked`` forgets them.

Every step is idempotent, so a step retried after a lost reply (the
connection to Redis dropped) does no harm.

Two implementations: ``MemoryBackend`` (the default: the embedded cluster,
nothing outlives the head) and ``RedisBackend`` (``queue: {type: redis}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from ..._errors import ConfigError
from ..._queue_urls import REDIS_SCHEMES

Blob: TypeAlias = bytes | bytearray | memoryview  # an encoded message (a received frame is kept as it came)


@dataclass
class StoredJob:
    """One job as the backend holds it."""

    job_id: str
    spec: bytes
    inputs: dict[int, Blob] = field(default_factory=dict)  # start -> encoded InputBatch, any input not done
    attempts: dict[int, int] = field(default_factory=dict)  # input index -> crashes charged
    results: list[Blob] = field(default_factory=list)  # encoded ResultBatch, oldest first, not acknowledged
    acked: int = 0  # results the client acknowledged (and the backend forgot): results[0] is number acked + 1
    done_bits: bytes = b""  # bit i (most significant first, as Redis' SETBIT) set: input i is done
    total: int = -1  # inputs the client sent, once it said it sent them all
    ended: bytes = b""  # b"" running, else the encoded JobEnded the client is owed after its results

    def is_done(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self.done_bits) and bool(self.done_bits[byte] & (0x80 >> (index & 7)))

    @property
    def done(self) -> int:
        return sum(bin(b).count("1") for b in self.done_bits)


@dataclass(frozen=True)
class Step:
    """One write step, by the name of the ``QueueBackend`` method that does it alone."""

    name: str  # create_job, add_inputs, inputs_done, store_result, set_attempts, results_acked, end_job, delete_job
    args: tuple[Any, ...]


class QueueBackend(Protocol):
    """Every method is one atomic step of the backend."""

    durable: bool  # does a job outlive the head's process?
    where: str  # for people: "memory", or the Redis URL without its password

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def create_job(self, job_id: str, spec: bytes) -> None: ...
    async def add_inputs(self, job_id: str, start: int, size: int, batch: Blob) -> None: ...
    async def inputs_done(self, job_id: str, total: int) -> None: ...
    async def store_result(self, job_id: str, start: int, n: int, result: Blob, write_id: str = "") -> bool:
        """Inputs ``start .. start+n-1`` have their ``result``: keep it until acknowledged and
        drop input batches left with nothing to do.  False, changing nothing, if any of those
        inputs is done already (or the job is unknown): a duplicate, to be dropped -- unless
        that was this same ``write_id`` (the step sent again after its reply was lost)."""

    async def set_attempts(self, job_id: str, index: int, attempts: int) -> None: ...
    async def results_acked(self, job_id: str, upto: int) -> None:
        """The client holds the first ``upto`` results of the job: forget them (idempotent:
        a step retried after a lost reply changes nothing)."""

    async def end_job(self, job_id: str, ended: Blob) -> None:
        """Record how the job ended (the encoded JobEnded) and drop its inputs; results the
        client has not acknowledged stay, until ``delete_job``."""

    async def delete_job(self, job_id: str) -> None: ...
    async def write(self, steps: list[Step]) -> list[bool]:
        """Several write steps, in order, atomically and in one round trip where the backend
        can; per step, ``store_result``'s answer, else True."""

    async def job_ids(self) -> list[str]: ...
    async def load(self, job_id: str) -> StoredJob | None: ...


def backend_for(queue: str, cluster: str = "burla") -> QueueBackend:
    """The backend a head's ``--queue`` names: ``memory`` or a Redis URL (not opened yet)."""
    if queue == "memory":
        return open_backend()
    if queue.startswith(REDIS_SCHEMES):
        return open_backend("redis", queue, cluster)
    raise ConfigError(f"--queue {queue!r}: expected memory or redis://HOST:PORT/DB")


def open_backend(kind: str = "memory", url: str = "", cluster: str = "burla") -> QueueBackend:
    """The backend ``queue: {type: KIND, url: URL}`` names for ``cluster`` (not opened yet)."""
    if kind == "memory":
        from ._memory import MemoryBackend

        return MemoryBackend()
    if kind == "redis":
        from ._redis import RedisBackend

        return RedisBackend(url or "redis://127.0.0.1:6379/0", cluster)
    raise ValueError(f"queue.type: {kind!r} is not a queue backend; use memory or redis")


__all__ = ["Blob", "QueueBackend", "Step", "StoredJob", "backend_for", "open_backend"]
