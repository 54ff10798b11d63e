"""The client's connection to a head, driven by a private event-loop thread.

User code calls in from any thread (a script's main thread, a Jupyter cell
whose loop is already running, an async app): all socket work happens on the
session's own uvloop thread, and a job's events reach the caller through its
``JobChannel``.  The thread also keeps heartbeats flowing while the caller is
busy, so a long-running consumer never looks dead to the head.

A head with a durable queue backend (``Welcome.durable``) survives its own
restart: when the connection drops, the session reconnects with backoff for
up to RESUME_TIMEOUT seconds and resumes each job (``ResumeJob``).  Until
then a job keeps every input batch the head has not said it stored
(``InputsStored``), and sends again those the new head lacks; the head
sends again the stored results the client did not get.  The caller sees one
notice, and every result exactly once.

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
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import msgspec

from .. import _loop
from .._errors import ConnectionLost, ProtocolError
from .._retry import retry
from ..transport import Connection, TransportConfig, connect
from ..transport._tls import client_context
from ..transport.messages import (
    INITIAL_INPUT_CREDIT,
    AttachJob,
    CancelJob,
    ClientHello,
    DecodedMessage,
    InputBatch,
    InputCredit,
    InputsDone,
    InputsStored,
    JobAccepted,
    JobAttached,
    JobEnded,
    JobEndedAck,
    JobError,
    JobInfo,
    JobNotice,
    JobResumed,
    LogAck,
    LogBatch,
    LogLine,
    Message,
    QueryJob,
    ResultAck,
    ResultBatchView,
    ResumeJob,
    SubmitJob,
    Welcome,
)
from ._environment import job_environment
from ._events import Ended, JobEvent, Logs, Lost, Notice, Results, Uploaded

log = logging.getLogger("burla.client")
T = TypeVar("T")
LIVENESS_CHECK = 1.0  # seconds between checks that the loop thread still runs, while a caller waits
CONNECT_TIMEOUT = 30.0  # seconds for connect + hello (the transport bounds each step further)
CLOSE_TIMEOUT = 2.0
ACK_DELAY = 0.005  # seconds a consumed result batch may wait to be acknowledged to the head
ACK_EAGER = 16  # consumed batches acknowledged at once (the head's result window is 64 and up)
RESUME_TIMEOUT = 60.0  # seconds to reconnect to a durable head that went away (the head waits as long)
RESUMED = "head restarted, job resumed"


class JobChannel:
    """One job's traffic between the loop thread and the caller."""

    def __init__(self, session: Session, spec: SubmitJob | None, job_id: str = "") -> None:
        """``spec``: the job this client submits; None: a detached job it reads (``Session.attach``)."""
        self.session = session
        self.spec = spec
        self.job_id = spec.job_id if spec is not None else job_id
        self._read_base = -1  # reading: the result batches the job's readers had taken before us
        # ... and, until the head answers AttachJob, results still on their way to an earlier
        # reader in this session are not ours (the answer is followed by every one not taken)
        self._attaching = spec is None
        self._events: queue.SimpleQueue[JobEvent] = queue.SimpleQueue()
        self.n_workers = 0
        self.ended = False
        # For resuming after a head restart (loop side): see the module's docstring.
        self._accepted = False  # JobAccepted came: the head stored the job
        self._unstored: deque[InputBatch] = deque()  # sent, not yet InputsStored (durable heads only)
        self._resuming = False  # from a lost connection until what the new head lacks was sent again
        self._resend: deque[InputBatch] | None = None  # that, once the new head said (JobResumed)
        self._done_total: int | None = None  # InputsDone's, once the inputs ran out
        self._results_in = 0  # result batches received
        self._logs_in = 0  # log batches received
        # Credit and acks are shared with the caller's threads (the feeder, the consumer): a
        # batch or an ack is handed to the loop without a round trip per input (issue 10).
        self._lock = threading.Condition()
        self._credit = INITIAL_INPUT_CREDIT
        self._unacked = 0  # results consumed, not yet acknowledged to the head
        self._consumed = self._logs_shown = 0  # result and log batches the caller took
        self._skip_acks = self._skip_log_acks = 0  # ... that a restarted head takes as acknowledged
        self._ack_posted = False
        self._ack_timer: asyncio.TimerHandle | None = None
        self.on_credit: Callable[[], None] | None = None  # called on the loop thread when credit arrives

    # loop side
    def _on_message(self, msg: DecodedMessage) -> None:
        match msg:
            case InputCredit(batches=n):
                self._add_credit(n)
            case JobAccepted(n_workers=n):
                self.n_workers = n
                self._accepted = True
            case InputsStored(upto=upto, complete=complete):
                while self._unstored and self._unstored[0].start + len(self._unstored[0].ends) <= upto:
                    self._unstored.popleft()
                if complete:
                    self._events.put(Uploaded())
            case JobResumed():
                self._resumed(msg)
            case JobAttached():
                self._attached(msg)
            case _ if self._attaching and not isinstance(msg, JobAttached):
                return  # for an earlier reader of the job in this session
            case ResultBatchView():
                self._results_in += 1
                self._events.put(Results(msg))
                if self._ack_timer is None:  # its ack goes at the latest ACK_DELAY from now
                    self._ack_timer = self.session.loop.call_later(ACK_DELAY, self._flush_acks)
            case JobEnded():
                self._end()
                if self.session.durable or self.spec is None:  # the head keeps the job until it hears
                    self.session._send_quietly(JobEndedAck(self.job_id))  # we hold its end (a reader: always)
                self._events.put(Ended(msg))
            case LogBatch(lines=lines):
                self._logs_in += 1
                self._events.put(Logs(lines))  # printed by the caller's thread (issue 11)
            case JobNotice(text=text):
                self._events.put(Notice(text))

    def _add_credit(self, n: int) -> None:
        """Credit from the head: first for batches to send again (after a head restart)."""
        while self._resend and n > 0:
            self.session._send_quietly(self._resend.popleft())
            n -= 1
        if self._resend is not None and not self._resend:
            self._resend, self._resuming = None, False
            if self._done_total is not None:
                self.session._send_quietly(InputsDone(self.job_id, self._done_total))
        if n <= 0:
            return
        with self._lock:
            self._credit += n
            self._lock.notify_all()
        if self.on_credit is not None:
            self.on_credit()

    def _send_input(self, batch: InputBatch) -> None:
        """(loop thread) Send a batch, kept until the head stores it when it can restart."""
        if self.session.durable:
            self._unstored.append(batch)
        if not self._resuming:
            self.session._send_quietly(batch)
        elif self._resend is not None:
            self._resend.append(batch)  # behind what the new head lacks, under its credit
        # (else the new head has not answered yet: it gets the batch from _unstored)

    async def _send_input_drained(self, batch: InputBatch) -> None:
        self._send_input(batch)
        await self.session.conn.drain()

    def _send_done(self, total: int) -> None:
        self._done_total = total
        if not self._resuming:
            self.session._send_quietly(InputsDone(self.job_id, total))

    def _suspend(self) -> None:
        """(loop thread) The connection dropped; the head will be asked to resume the job.
        What the caller has not consumed yet the new head takes as acknowledged."""
        self._resuming, self._resend = True, None
        with self._lock:
            self._credit = 0  # the old head's grant dies with it
            self._unacked, self._ack_posted = 0, False
            self._skip_acks = self._results_in - self._consumed
            self._skip_log_acks = self._logs_in - self._logs_shown
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _ask_resume(self) -> None:
        if self.spec is None:  # reading a detached job: attach again, holding what we received
            self.session._send_quietly(AttachJob(self.job_id, self._read_base + self._results_in))
        else:
            self.session._send_quietly(ResumeJob(self.job_id, self._results_in))

    def _attached(self, msg: JobAttached) -> None:
        if not msg.found:
            self._end()
            why = f"the burla head at {self.session.address} has no detached job {self.job_id!r}"
            self._events.put(Ended(JobEnded(self.job_id, "unknown", JobError("JobNotFound", why))))
            return
        if self._read_base < 0:
            self._read_base = msg.first
        elif self._resuming:
            self._events.put(Notice(RESUMED))
        self._resuming = self._attaching = False

    def _resumed(self, msg: JobResumed) -> None:
        """The new head's answer: send again what it lacks, under the credit it grants."""
        assert self.spec is not None  # (only a submitted job is resumed)
        if msg.received < 0:
            if self._accepted:  # it was stored, and is gone: nothing can bring it back
                self._lost(ConnectionLost(
                    f"lost the connection to the burla head at {self.session.address}, which no longer had job "
                    f"{self.job_id} when this client came back (a head that stayed up cancels the jobs of a client "
                    "that disconnects; a restarted one keeps only what its queue backend held)"))
                return
            self.session._send_quietly(self.spec)  # it never reached the backend: submit it again
            self._resend = deque(self._unstored)
            self._add_credit(INITIAL_INPUT_CREDIT)
        else:
            resend = deque(b for b in self._unstored if b.start >= msg.received)
            if any(b.start < msg.received < b.start + len(b.ends) for b in self._unstored):
                self._lost(ConnectionLost(f"job {self.job_id}: the restarted head holds inputs up to "
                                          f"{msg.received}, inside a batch this client sent"))
                return
            self._resend = resend
            self._add_credit(msg.input_credit)
        self._events.put(Notice(RESUMED))

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
            self.session.call(self._send_input_drained(batch))
        else:
            self.session.soon(self._send_input, batch)
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

    def send_input(self, batch: InputBatch) -> None:
        """Send a batch the caller took credit for (``take_credit``), without waiting."""
        self.session.soon(self._send_input, batch)

    def inputs_done(self, total: int) -> None:
        self.session.soon(self._send_done, total)

    def show(self, event: Logs | Notice) -> None:
        """Write print output or a notice (on the caller's thread); printed log
        lines give their worker its log credit back."""
        if isinstance(event, Notice):
            _print_notice(event.text)
            return
        _print_lines(event.lines)
        with self._lock:
            self._logs_shown += 1
            if self._skip_log_acks:
                self._skip_log_acks -= 1
                return
        self.send_nowait(LogAck(self.job_id, 1))

    def ack(self, batches: int = 1) -> None:
        """Results consumed.  Acks are not a message each: they go with the timer
        the results armed on arrival (ACK_DELAY), or at once past ACK_EAGER
        batches -- far below the head's window, which then never waits on them,
        while the head is spared a message per result (a tiny call's round trip
        shares 2 CPUs with it)."""
        with self._lock:
            self._consumed += batches
            skip = min(self._skip_acks, batches)
            self._skip_acks -= skip
            self._unacked += batches - skip
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
        """Forget the job here; what the caller consumed is acknowledged first (a detached job's
        next reader must not be given it again)."""
        self.session.soon(self._flush_acks)
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
        self.durable = False  # the head's jobs outlive it: reconnect and resume them
        self._reconnecting = False
        self._queries: dict[str, deque[asyncio.Future[JobInfo]]] = {}  # QueryJob's waiting for JobInfo
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self.loop.run_forever, name="burla-client", daemon=True)
        self._thread.start()
        try:
            tls = client_context(ca) if ca else None

            def dial() -> Coroutine[Any, Any, Connection]:
                return self._connect(host, port, token, transport, tls)

            self._dial = dial
            self.conn = self.call(self._dial(), CONNECT_TIMEOUT)
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
        self.durable = welcome.durable
        return conn

    async def _start_reader(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                while True:
                    msg = await self.conn.recv()
                    if isinstance(msg, JobInfo):
                        self._answered(msg)
                        continue
                    job = self.jobs.get(getattr(msg, "job_id", ""))
                    if job is not None:
                        job._on_message(msg)
            except (ConnectionLost, ProtocolError) as e:
                why = str(e).removeprefix(f"{self.address}: ")  # the transport names the peer too
                lost = ConnectionLost(f"lost the connection to the burla head at {self.address}: {why}")
            if not (self.durable and any(not j.ended for j in self.jobs.values()) and not self._closed):
                break
            try:
                await self._reconnect()
            except (ConnectionLost, ProtocolError, OSError) as e:
                lost = ConnectionLost(f"{lost}; it did not come back within {RESUME_TIMEOUT:g}s ({e})")
                break
        self.dead = lost
        self._fail_queries(lost)
        for job in list(self.jobs.values()):
            job._lost(lost)

    def _answered(self, info: JobInfo) -> None:
        waiting = self._queries.get(info.job_id)
        if waiting:
            fut = waiting.popleft()
            if not waiting:
                del self._queries[info.job_id]
            if not fut.done():
                fut.set_result(info)

    def _fail_queries(self, error: ConnectionLost) -> None:
        queries, self._queries = self._queries, {}
        for waiting in queries.values():
            for fut in waiting:
                if not fut.done():
                    fut.set_exception(error)

    async def _reconnect(self) -> None:
        """The durable head went away (a restart): connect again and resume every job."""
        log.warning("lost the burla head at %s; reconnecting to resume %d job(s)", self.address, len(self.jobs))
        for job in self.jobs.values():
            if not job.ended:
                job._suspend()
        self._fail_queries(ConnectionLost(f"lost the connection to the burla head at {self.address}"))
        self.conn.abort()
        self._reconnecting = True
        try:
            self.conn = await retry(self._dial, retry_on=(ConnectionLost, ProtocolError, OSError),
                                    deadline=RESUME_TIMEOUT, what=f"reconnecting to {self.address}")
        finally:
            self._reconnecting = False
        for job in list(self.jobs.values()):
            if not job.ended:
                job._ask_resume()

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
        job = JobChannel(self, spec)

        async def go() -> None:
            if self.dead is not None:
                raise self.dead
            self.jobs[spec.job_id] = job
            self._send_quietly(spec)
            with job._lock:
                job._credit -= len(first)
            if self._reconnecting:  # the head went away: the job is submitted once it is back
                job._suspend()
            for batch in first:
                job._send_input(batch)
            if total is not None:
                job._send_done(total)

        self.call(go(), CONNECT_TIMEOUT)
        return job

    def attach(self, job_id: str) -> JobChannel:
        """Read a detached job's results (AttachJob): they arrive on the channel."""
        job = JobChannel(self, None, job_id)

        async def go() -> None:
            if self.dead is not None:
                raise self.dead
            self.jobs[job_id] = job
            if self._reconnecting:
                job._suspend()  # attached once the head is back
            else:
                self._send_quietly(AttachJob(job_id, 0))

        self.call(go(), CONNECT_TIMEOUT)
        return job

    def query(self, job_id: str) -> JobInfo:
        """How the head says the job is doing (QueryJob)."""
        async def go() -> JobInfo:
            if self.dead is not None:
                raise self.dead
            fut: asyncio.Future[JobInfo] = asyncio.get_running_loop().create_future()
            self._queries.setdefault(job_id, deque()).append(fut)
            self._send_quietly(QueryJob(job_id))
            return await fut

        return self.call(go(), CONNECT_TIMEOUT)

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
