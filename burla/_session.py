"""The client's connection to a head, driven by a private event-loop thread.

User code calls in from any thread (a script's main thread, a Jupyter cell
whose loop is already running, an async app): all socket work happens on the
session's own uvloop thread, and results reach the caller through a
thread-safe queue per job.  The thread also keeps heartbeats flowing while
the caller is busy, so a long-running consumer never looks dead to the head.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
from typing import Any, Coroutine, TypeVar

from . import _loop
from ._errors import ConnectionLost, ProtocolError
from .transport import Connection, TransportConfig, connect
from .transport.messages import (
    CancelJob,
    ClientHello,
    InputBatch,
    InputCredit,
    InputsDone,
    JobAccepted,
    JobEnded,
    JobNotice,
    LogBatch,
    Message,
    ResultAck,
    ResultBatchView,
    SubmitJob,
    Welcome,
)
from .scheduler._state import INITIAL_INPUT_CREDIT

log = logging.getLogger("burla.client")
T = TypeVar("T")


class JobChannel:
    """One job's traffic.  ``events`` carries ResultBatch, JobEnded and
    ConnectionLost instances to the consuming thread."""

    def __init__(self, session: "Session", job_id: str):
        self.session = session
        self.job_id = job_id
        self.events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.n_workers = 0
        self.ended = False
        self._credit = INITIAL_INPUT_CREDIT
        self._credit_changed = asyncio.Event()

    # loop side
    def _on_message(self, msg: Message) -> None:
        match msg:
            case InputCredit(batches=n):
                self._credit += n
                self._credit_changed.set()
            case JobAccepted(n_workers=n):
                self.n_workers = n
            case ResultBatchView() | JobEnded():
                if isinstance(msg, JobEnded):
                    self.ended = True
                    self._credit_changed.set()
                self.events.put(msg)
            case LogBatch(lines=lines):
                _print_lines(lines)
            case JobNotice(text=text):
                _print_notice(text)

    async def _send_batch(self, batch: InputBatch) -> bool:
        while self._credit <= 0 and not self.ended:
            self._credit_changed.clear()
            await self._credit_changed.wait()
        if self.ended:
            return False
        self._credit -= 1
        await self.session.conn.send(batch)
        return True

    # caller side
    def send_batch(self, batch: InputBatch) -> bool:
        """Block until the head grants credit, then send; False if the job ended."""
        return self.session.call(self._send_batch(batch))

    def send_nowait(self, msg: Message) -> None:
        self.session.loop.call_soon_threadsafe(self.session.send_quietly, msg)

    def inputs_done(self, total: int) -> None:
        self.send_nowait(InputsDone(self.job_id, total))

    def ack(self, batches: int = 1) -> None:
        self.send_nowait(ResultAck(self.job_id, batches))

    def cancel(self, reason: str, timeout: float = 2.0) -> JobEnded | None:
        """Ask the head to cancel; wait up to ``timeout`` for its confirmation."""
        if self.ended:
            return None
        self.send_nowait(CancelJob(self.job_id, reason))
        try:
            while True:
                ev = self.events.get(timeout=timeout)
                if isinstance(ev, (JobEnded, ConnectionLost)):
                    return ev if isinstance(ev, JobEnded) else None
        except queue.Empty:
            return None
        finally:
            self.close()

    def close(self) -> None:
        self.session.jobs.pop(self.job_id, None)


class Session:
    def __init__(self, host: str, port: int, token: str, transport: TransportConfig = TransportConfig()):
        self.address = f"{host}:{port}"
        self.loop = _loop.new_event_loop()
        self.jobs: dict[str, JobChannel] = {}
        self.dead: BaseException | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="burla-client", daemon=True)
        self._thread.start()
        try:
            self.conn, welcome = self.call(self._connect(host, port, token, transport))
        except BaseException:
            self.close()
            raise
        self.cluster_workers = welcome.workers
        self.call(self._start_reader())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _connect(self, host: str, port: int, token: str, transport: TransportConfig) -> tuple[Connection, Welcome]:
        conn = await connect(host, port, token, transport)
        conn.send_nowait(ClientHello())
        welcome = await conn.recv()
        if not isinstance(welcome, Welcome):
            conn.abort()
            raise ProtocolError(f"head at {host}:{port} answered {type(welcome).__name__} to ClientHello")
        return conn, welcome

    async def _start_reader(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.conn.recv()
                job = self.jobs.get(getattr(msg, "job_id", ""))
                if job is not None:
                    job._on_message(msg)
        except (ConnectionLost, ProtocolError) as e:
            self.dead = ConnectionLost(f"lost the connection to the burla head at {self.address}: {e}")
            for job in list(self.jobs.values()):
                job.ended = True
                job._credit_changed.set()
                job.events.put(self.dead)

    def send_quietly(self, msg: Message) -> None:
        if not self.conn.closed:
            self.conn.send_nowait(msg)

    def submit(self, spec: SubmitJob, first: list[InputBatch], total: int | None) -> JobChannel:
        """Send the job and its first batches (within the initial credit) at once."""
        job = JobChannel(self, spec.job_id)

        async def go() -> None:
            if self.dead is not None:
                raise self.dead
            self.jobs[spec.job_id] = job
            self.conn.send_nowait(spec)
            for batch in first:
                job._credit -= 1
                self.conn.send_nowait(batch)
            if total is not None:
                self.conn.send_nowait(InputsDone(spec.job_id, total))

        self.call(go())
        return job

    def close(self) -> None:
        async def shut() -> None:
            if hasattr(self, "conn"):
                await self.conn.close(timeout=1.0)

        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=2)
            except (concurrent.futures.TimeoutError, Exception):
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=2)


def _print_notice(text: str) -> None:
    try:
        sys.stderr.write(f"burla: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _print_lines(lines: list) -> None:
    out, err = [], []
    for line in lines:
        (err if line.stream == 2 else out).append(line.text + "\n")
    try:
        if out:
            sys.stdout.write("".join(out))
            sys.stdout.flush()
        if err:
            sys.stderr.write("".join(err))
            sys.stderr.flush()
    except (OSError, ValueError):
        pass  # the user's stdout was closed: drop output rather than the job
