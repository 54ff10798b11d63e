"""The head's write-ahead to its queue backend (``backends``).

``HeadState`` notes, as ``Fact`` records, what a restarted head would need
(a job created, inputs accepted, a result made final, an input's crash
charged...).  After each event the head hands the facts and the commands the
event produced to ``Journal.submit``.  The facts are written first, in order,
and then the commands are sent, so nothing is said to a client or a node
that the backend does not already hold:

- a result reaches the client only once the backend has made it final
  (``store_result``).  One the backend refuses (those inputs already have a
  result: a rerun after a head restart) is dropped, never delivered twice;
- everything after a pending write waits behind it, so no message overtakes
  another (a job's ``JobEnded`` never arrives before its last result).

The in-process backend's steps never wait: its facts are applied on the spot
and the commands go out at once, as if there were no journal.  A durable
backend's are written by one task, in order.  If it stays unreachable for
``outage_s``, the jobs fail with a message naming it: they are never left
hanging.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import QueueUnavailable
from ..transport.messages import AnyInputBatch, AnyResultBatch, JobEnded, SubmitJob, encode
from ._records import Command, ToClient
from .backends import QueueBackend, Step

log = logging.getLogger("burla.head.journal")
MAX_BATCH = 256  # pending events whose facts go to the backend in one round trip
T = TypeVar("T")


@dataclass(slots=True)
class JobCreated:
    spec: SubmitJob


@dataclass(slots=True)
class InputsAdded:
    batch: AnyInputBatch


@dataclass(slots=True)
class InputsComplete:
    job_id: str
    total: int


@dataclass(slots=True)
class ResultFinal:
    result: AnyResultBatch


@dataclass(slots=True)
class AttemptCharged:
    job_id: str
    index: int
    attempts: int


@dataclass(slots=True)
class ResultsAcked:
    job_id: str
    upto: int  # results the client has acknowledged, all told


@dataclass(slots=True)
class JobFinished:
    ended: JobEnded  # owed to the client after its unacknowledged results


@dataclass(slots=True)
class JobForgotten:
    job_id: str  # its client holds every result and the end: nothing of it is kept


Fact = (JobCreated | InputsAdded | InputsComplete | ResultFinal | AttemptCharged | ResultsAcked | JobFinished
        | JobForgotten)


class Journal:
    def __init__(self, backend: QueueBackend, send: Callable[[list[Command]], None],
                 fail_all: Callable[[str], list[Command]], outage_s: float = 60.0):
        self.backend = backend
        self._send = send
        self._fail_all = fail_all  # fail every job (message): the backend is gone
        self.outage_s = outage_s
        self._immediate = not backend.durable  # in-process: its coroutines never wait
        self._pending: deque[tuple[list[Fact], list[Command]]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._broken = ""  # why the backend was given up on
        self._epoch = secrets.token_hex(4)  # with a counter, names each write (see store_result)
        self._writes = itertools.count()

    def start(self) -> None:
        if not self._immediate:
            self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    def submit(self, facts: list[Fact], cmds: list[Command]) -> None:
        if self._pending or (facts and not self._immediate and not self._broken):
            self._pending.append((facts, cmds))
            self._wake.set()
            return
        refused: set[int] = set()
        if facts and not self._broken:  # the in-process backend: written on the spot
            refused = _refused(facts, _now(self.backend.write([_step(f) for f in facts])))
        self._send(_without(cmds, refused) if refused else cmds)

    async def _write_forever(self) -> None:
        """Write what is pending, up to MAX_BATCH events' facts in one backend round trip, then
        send those events' commands, in order."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                entries = [self._pending[i] for i in range(min(len(self._pending), MAX_BATCH))]
                refused: set[int] = set()
                if not self._broken:
                    facts = [f for fs, _ in entries for f in fs]
                    steps = [_step(f, f"{self._epoch}.{next(self._writes)}") for f in facts]
                    refused = _refused(facts, await self._with_retries(steps) if steps else [])
                for _ in entries:
                    self._pending.popleft()
                for _, cmds in entries:
                    self._send(_without(cmds, refused) if refused else cmds)

    async def _with_retries(self, steps: list[Step]) -> list[bool]:
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.outage_s, 0.05
        while True:
            try:
                return await self.backend.write(steps)
            except QueueUnavailable as e:
                if loop.time() + delay > deadline:
                    return self._give_up(f"the queue backend failed for {self.outage_s:g}s ({e})", steps)

                log.warning("queue backend: %s; retrying in %.2fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
            except Exception as e:  # not an outage (a refused command): retrying would not help
                log.exception("queue backend refused a write")
                return self._give_up(f"the queue backend refused a write ({type(e).__name__}: {e})", steps)

    def _give_up(self, why: str, steps: list[Step]) -> list[bool]:
        """Stop writing to the backend and fail every job, saying why: never leave them hanging."""
        self._broken = why
        log.error("%s: failing its jobs", why)
        self._send(self._fail_all(why))
        return [True] * len(steps)


def _step(fact: Fact, write_id: str = "") -> Step:
    """The backend step that writes ``fact``."""
    match fact:
        case ResultFinal(result=rb):
            return Step("store_result", (rb.job_id, rb.start, len(rb.ends), encode(rb), write_id))
        case InputsAdded(batch=batch):
            return Step("add_inputs", (batch.job_id, batch.start, len(batch.ends), encode(batch)))
        case JobCreated(spec=spec):
            return Step("create_job", (spec.job_id, bytes(encode(spec))))
        case InputsComplete(job_id=job_id, total=total):
            return Step("inputs_done", (job_id, total))
        case AttemptCharged(job_id=job_id, index=index, attempts=attempts):
            return Step("set_attempts", (job_id, index, attempts))
        case ResultsAcked(job_id=job_id, upto=upto):
            return Step("results_acked", (job_id, upto))
        case JobFinished(ended=ended):
            return Step("end_job", (ended.job_id, encode(ended)))
        case JobForgotten(job_id=job_id):
            return Step("delete_job", (job_id,))
    raise TypeError(f"not a journal fact: {fact!r}")


def _refused(facts: list[Fact], answers: list[bool]) -> set[int]:
    """ids of the results the backend refused (duplicates): their commands are dropped."""
    return {id(f.result) for f, ok in zip(facts, answers, strict=True) if not ok and isinstance(f, ResultFinal)}


def _without(cmds: list[Command], refused: set[int]) -> list[Command]:
    return [c for c in cmds if not (isinstance(c, ToClient) and id(c.msg) in refused)]


def _now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (the in-process backend's) to its end, here."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("an in-process queue backend step waited")
