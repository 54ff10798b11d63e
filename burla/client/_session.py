"""The client's connection to a head, driven by a private event-loop thread.

User code calls in from any thread (a script's main thread, a Jupyter cell
whose loop is already running, an async app): all socket work happens on the
session's own uvloop thread, and a job's events reach the caller through its
``JobChannel``.  The thread also keeps heartbeats flowing while the caller is
busy, so a long-running consumer never looks dead to the head.

No caller waits blindly: a wait on the loop thread has a deadline or watches
the thread, so a dead thread or connection surfaces as ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import msgspec

from .. import _loop
from .._errors import ConnectionLost, ProtocolError
from ..transport import Connection, TransportConfig, connect
from ..transport._tls import client_context
from ..transport.messages import (
    INITIAL_INPUT_CREDIT,
    CancelJob,
    ClientHello,
    DecodedMessage,
    InputBatch,
    InputCredit,
    InputsDone,
    JobAccepted,
    JobEnded,
    JobNotice,
    LogAck,
    LogBatch,
    LogLine,
    Message,
    ResultAck,
    ResultBatchView,
    SubmitJob,
    Welcome,
)
from ._environment import job_environment
from ._events import Ended, JobEvent, Logs, Lost, Notice, Results

log = logging.getLogger("burla.client")
T = TypeVar("T")
LIVENESS_CHECK = 1.0  # seconds between checks that the loop thread still runs, while a caller waits
CONNECT_TIMEOUT = 30.0  # seconds for connect + hello (the transport bounds each step further)
CLOSE_TIMEOUT = 2.0
ACK_DELAY = 0.005  # seconds a consumed result batch may wait to be acknowledged to the head
ACK_EAGER = 16  # consumed batches acknowledged at once (the head's result window is 64 and up)


class JobChannel:
    """One job's traffic between the loop thread and the caller."""

    def __init__(self, session: Session, job_id: str) -> None:
        self.session = session
        self.job_id = job_id
        self._events: queue.SimpleQueue[JobEvent] = queue.SimpleQueue()
        self.n_workers = 0
        self.ended = False
        # Credit and acks are shared with the caller's threads (the feeder, the consumer): a
        # batch or an ack is handed to the loop without a round trip per input (issue 10).
        self._lock = threading.Condition()
        self._credit = INITIAL_INPUT_CREDIT
        self._unacked = 0  # results consumed, not yet acknowledged to the head
        self._ack_posted = False
        self._ack_timer: asyncio.TimerHandle | None = None
        self.on_credit: Callable[[], None] | None = None  # called on the loop thread when credit arrives

    # loop side
    def _on_message(self, msg: DecodedMessage) -> None:
        match msg:
            case InputCredit(batches=n):
                with self._lock:
                    self._credit += n
                    self._lock.notify_all()
                if self.on_credit is not None:
                    self.on_credit()
            case JobAccepted(n_workers=n):
                self.n_workers = n
            case ResultBatchView():
                self._events.put(Results(msg))
                if self._ack_timer is None:  # its ack goes at the latest ACK_DELAY from now
                    self._ack_timer = self.session.loop.call_later(ACK_DELAY, self._flush_acks)
            case JobEnded():
                self._end()
                self._events.put(Ended(msg))
            case LogBatch(lines=lines):
                self._events.put(Logs(lines))  # printed by the caller's thread (issue 11)
            case JobNotice(text=text):
                self._events.put(Notice(text))

    def _lost(self, error: ConnectionLost) -> None:
        self._end()
        self._events.put(Lost(error))

    def _end(self) -> None:
        self.ended = True
        with self._lock:
            self._lock.notify_all()

    def _flush_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        with self._lock:
            n, self._unacked, self._ack_posted = self._unacked, 0, False
        if n:
            self.session._send_quietly(ResultAck(self.job_id, n))

    # caller side
    def put(self, event: JobEvent) -> None:
        self._events.put(event)

    def next_event(self, timeout: float | None = None) -> JobEvent | None:
        """The next event; None once ``timeout`` seconds pass without one.
        A loop thread that died yields ``Lost`` instead of a hang."""
        for wait in _slices(timeout):
            try:
                return self._events.get(timeout=wait)
            except queue.Empty:
                pass
            if not self.session.running:
                why = "was closed" if self.session._closed else "stopped"
                return Lost(ConnectionLost(f"the client's session with {self.session.address} {why}"))
        return None

    def send_batch(self, batch: InputBatch) -> bool:
        """Block until the head grants credit, then send; False if the job ended.
        The head's credit bounds what is in flight; a socket that cannot keep
        up makes the sender wait for it to drain."""
        with self._lock:
            for wait in _slices(None):
                if self.ended:
                    return False
                if self._credit > 0:
                    self._credit -= 1
                    break
                if not self.session.running:
                    raise ConnectionLost(f"the client's session with {self.session.address} stopped")
                self._lock.wait(wait)
        if self.session.conn.write_paused:
            self.session.call(self.session.conn.send(batch))
        else:
            self.session.post(batch)
        return True

    def take_credit(self) -> bool:
        """Take one batch's credit if the head granted any, without waiting."""
        with self._lock:
            if self._credit <= 0 or self.ended:
                return False
            self._credit -= 1
            return True

    def give_back_credit(self) -> None:
        with self._lock:
            self._credit += 1

    def send_nowait(self, msg: Message) -> None:
        self.session.post(msg)

    def inputs_done(self, total: int) -> None:
        self.send_nowait(InputsDone(self.job_id, total))

    def show(self, event: Logs | Notice) -> None:
        """Write print output or a notice (on the caller's thread); printed log
        lines give their worker its log credit back."""
        if isinstance(event, Notice):
            _print_notice(event.text)
            return
        _print_lines(event.lines)
        self.send_nowait(LogAck(self.job_id, 1))

    def ack(self, batches: int = 1) -> None:
        """Results consumed.  Acks are not a message each: they go with the timer
        the results armed on arrival (ACK_DELAY), or at once past ACK_EAGER
        batches -- far below the head's window, which then never waits on them,
        while the head is spared a message per result (a tiny call's round trip
        shares 2 CPUs with it)."""
        with self._lock:
            self._unacked += batches
            if self._ack_posted or self._unacked < ACK_EAGER:
                return
            self._ack_posted = True
        self.session.soon(self._flush_acks)

    def cancel(self, reason: str, timeout: float = 2.0) -> JobEnded | None:
        """Ask the head to cancel; wait up to ``timeout`` for its confirmation."""
        if self.ended:
            return None
        self.send_nowait(CancelJob(self.job_id, reason))
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                match self.next_event(left):
                    case Ended(msg=msg):
                        return msg
                    case Logs() | Notice() as shown:
                        self.show(shown)
                    case Lost() | None:
                        return None
            return None
        finally:
            self.close()

    def close(self) -> None:
        self.session.jobs.pop(self.job_id, None)


class Session:
    def __init__(self, host: str, port: int, token: str, transport: TransportConfig = TransportConfig(),
                 ca: str = "") -> None:
        self.address = f"{host}:{port}"
        self.ca = ca  # the head speaks TLS with a certificate of this CA (PEM), or "" for plaintext
        self.loop = _loop.new_event_loop()
        self.jobs: dict[str, JobChannel] = {}
        self.dead: ConnectionLost | None = None
        self.cluster_workers = 0  # worker slots the head reported when we connected
        self.environments = False  # some node installs a job's environment (then jobs carry ours)
        # ... only from wheels we ship (then what their workers have, which the wheels complete)
        self.wheel_image: dict[str, str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self.loop.run_forever, name="burla-client", daemon=True)
        self._thread.start()
        try:
            tls = client_context(ca) if ca else None
            self.conn = self.call(self._connect(host, port, token, transport, tls), CONNECT_TIMEOUT)
        except BaseException:
            self.close()
            raise
        self.call(self._start_reader(), CONNECT_TIMEOUT)

    @property
    def running(self) -> bool:
        """The loop thread is alive and the session not closed."""
        return self._thread.is_alive() and not self._closed

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop thread and wait for it: at most ``timeout``
        seconds (then ConnectionLost), and never past the thread's death."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        for wait in _slices(timeout):
            try:
                return fut.result(wait)
            except concurrent.futures.TimeoutError:
                pass
            if not self.running:
                fut.cancel()
                raise ConnectionLost(f"the client's connection to {self.address} stopped")
        fut.cancel()
        raise ConnectionLost(f"the client's connection to {self.address} did not answer within {timeout:g}s")

    def post(self, msg: Message) -> None:
        """Send ``msg`` from any thread without waiting (dropped once the connection is gone)."""
        self.soon(self._send_quietly, msg)

    def soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, from any thread (not once the session is gone)."""
        if self.running:
            self.loop.call_soon_threadsafe(fn, *args)

    async def _connect(self, host: str, port: int, token: str, transport: TransportConfig,
                       tls: ssl.SSLContext | None) -> Connection:
        conn = await connect(host, port, token, transport, tls)
        conn.send_nowait(ClientHello())
        welcome = await conn.recv()
        if not isinstance(welcome, Welcome):
            conn.abort()
            raise ProtocolError(f"head at {host}:{port} answered {type(welcome).__name__} to ClientHello")
        self.cluster_workers = welcome.workers
        self.environments = welcome.environments
        self.wheel_image = welcome.image_distributions if welcome.wheels_only else None
        return conn

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
            why = str(e).removeprefix(f"{self.address}: ")  # the transport names the peer too
            self.dead = ConnectionLost(f"lost the connection to the burla head at {self.address}: {why}")
            for job in list(self.jobs.values()):
                job._lost(self.dead)

    def _send_quietly(self, msg: Message) -> None:
        if not self.conn.closed:
            self.conn.send_nowait(msg)

    def submit(self, spec: SubmitJob, first: list[InputBatch], total: int | None,
               sync_packages: bool = False) -> JobChannel:
        """Send the job and its first batches (within the initial credit) at once; with
        ``sync_packages``, and nodes that install environments, with this interpreter's."""
        if sync_packages and self.environments:
            # (ConfigError if a wheel cannot be built or fetched)
            dists, wheels = job_environment(self.wheel_image)
            spec = msgspec.structs.replace(spec, requirements=dists, wheels=wheels)
        job = JobChannel(self, spec.job_id)

        async def go() -> None:
            if self.dead is not None:
                raise self.dead
            self.jobs[spec.job_id] = job
            self.conn.send_nowait(spec)
            with job._lock:
                job._credit -= len(first)
            for batch in first:
                self.conn.send_nowait(batch)
            if total is not None:
                self.conn.send_nowait(InputsDone(spec.job_id, total))

        self.call(go(), CONNECT_TIMEOUT)
        return job

    def close(self) -> None:
        """Close the connection and stop the loop thread (bounded by CLOSE_TIMEOUT each)."""
        async def shut() -> None:
            if self._reader is not None:
                self._reader.cancel()
            if hasattr(self, "conn"):
                await self.conn.close(timeout=1.0)

        if self.running:
            self._closed = True
            try:
                asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=CLOSE_TIMEOUT)
            except (concurrent.futures.TimeoutError, ConnectionLost, OSError):
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=CLOSE_TIMEOUT)


def _slices(timeout: float | None) -> Iterator[float]:
    """The waits of a blocking call: at least one, each at most LIVENESS_CHECK
    seconds (the caller checks the loop thread between them), until ``timeout``
    seconds have passed (None: no end)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        yield LIVENESS_CHECK if deadline is None else max(0.0, min(LIVENESS_CHECK, deadline - time.monotonic()))
        if deadline is not None and time.monotonic() >= deadline:
            return


def _print_notice(text: str) -> None:
    try:
        sys.stderr.write(f"burla: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _print_lines(lines: list[LogLine]) -> None:
    out: list[str] = []
    err: list[str] = []
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
