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
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import QueueUnavailable
from ..transport.messages import AnyInputBatch, AnyResultBatch, SubmitJob, encode
from ._records import Command, ToClient
from .backends import QueueBackend

log = logging.getLogger("burla.head.journal")
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
    job_id: str
    status: str


Fact = JobCreated | InputsAdded | InputsComplete | ResultFinal | AttemptCharged | ResultsAcked | JobFinished


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
            for fact in facts:
                if (r := _now(self._apply(fact))) is not None:
                    refused.add(id(r))
        self._send(_without(cmds, refused) if refused else cmds)

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                facts, cmds = self._pending[0]
                refused: set[int] = set()
                for fact in facts if not self._broken else ():
                    r = await self._with_retries(fact)
                    if r is not None:
                        refused.add(id(r))
                self._pending.popleft()
                self._send(_without(cmds, refused) if refused else cmds)

    async def _with_retries(self, fact: Fact) -> AnyResultBatch | None:
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.outage_s, 0.05
        while True:
            try:
                return await self._apply(fact)
            except QueueUnavailable as e:
                if loop.time() + delay > deadline:
                    self._broken = f"the queue backend failed for {self.outage_s:g}s ({e})"
                    log.error("%s: failing its jobs", self._broken)
                    self._send(self._fail_all(self._broken))
                    return None
                log.warning("queue backend: %s; retrying in %.2fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    async def _apply(self, fact: Fact) -> AnyResultBatch | None:
        """Write one fact; a result the backend refuses (a duplicate) is returned."""
        b = self.backend
        match fact:
            case ResultFinal(result=rb):
                ok = await b.store_result(rb.job_id, rb.start, len(rb.ends), encode(rb))
                return None if ok else rb
            case InputsAdded(batch=batch):
                await b.add_inputs(batch.job_id, batch.start, len(batch.ends), encode(batch))
            case JobCreated(spec=spec):
                await b.create_job(spec.job_id, bytes(encode(spec)))
            case InputsComplete(job_id=job_id, total=total):
                await b.inputs_done(job_id, total)
            case AttemptCharged(job_id=job_id, index=index, attempts=attempts):
                await b.set_attempts(job_id, index, attempts)
            case ResultsAcked(job_id=job_id, upto=upto):
                await b.results_acked(job_id, upto)
            case JobFinished(job_id=job_id):
                # Nothing resumes an ended job yet: its record goes with it.
                await b.delete_job(job_id)
        return None


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
