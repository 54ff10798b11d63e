"""The node daemon's policy, as a state machine: events in, commands out, no I/O.

``NodeState`` decides which worker serves the node's job, which batch goes
to which worker, when a worker is killed or replaced, and what the head is
told.  ``_node.NodeDaemon`` does the I/O: it turns every message, exit and
sample into one method call here and carries out the commands returned
(``ToWorker``, ``ToHead``, ``Spawn``, ``Respawn``, ``ApplyLimits``, ``Kill``).

A worker moves through ``WorkerPhase``::

    STARTING --hello--> IDLE --job fits--> JOINING --limits applied--> SERVING
        |                ^  \\--job does not fit: Kill                    |
        |                +----------------- EndJob (job released) -------+
        +--exit before hello: Respawn (backoff)
    connected --connection ends--> EXITING --exit--> gone (BatchLost, Spawn)

Invariants (tests/runtime/test_node_state.py):

* A batch the head sent for the current job is in exactly one place: the
  job's ``pending`` queue here, or ``outstanding`` on one SERVING worker.
* A worker's results of one batch may arrive in parts (``_stream``): each is
  forwarded at once, and the batch stays outstanding until a part reaches
  its last input.
* A worker holds at most ``AssignJob.prefetch`` batches (one running, the
  rest ready); the rest wait in ``pending`` for the least-loaded worker.
* A worker that dies holding batches yields one ``BatchLost`` per batch,
  with the input it was running when it belongs to that batch; a result it
  sent before dying was already forwarded (the daemon reads the worker's
  connection to its end before reporting the exit), so nothing runs twice.
* At most ``AssignJob.n_workers`` workers are JOINING or SERVING the job.
* Log batches are forwarded in order and each ``LogAck`` from the head goes
  back to the workers that sent the oldest unacknowledged ones, so a worker's
  print output in flight stays within its log window at every hop.
* After a job ends (released, head lost, restart) no worker keeps its work:
  idle ones are told ``EndJob``, busy ones are killed and replaced.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .._retry import backoff
from ..transport.messages import (
    AssignJob,
    BatchAssigned,
    BatchLost,
    EndJob,
    InputBatchView,
    JobSetupFailed,
    LogAck,
    LogBatch,
    ResultBatchView,
    StartJob,
)
from ._node_commands import ApplyLimits, Command, Kill, Respawn, Spawn, ToHead, ToWorker

__all__ = ["ApplyLimits", "Command", "Kill", "NodeState", "Respawn", "Spawn", "ToHead", "ToWorker", "WorkerPhase",
           "WorkerSlot"]
log = logging.getLogger("burla.node")

TIMEOUT_GRACE = 2.0  # seconds past func_timeout before the node kills a call that ignored the alarm
START_FAILURES_FATAL = 3  # workers of one job that exit before connecting before the job is failed
RESPAWN_MAX_DELAY = 10.0  # seconds: backoff cap between replacements of workers that never come up


class WorkerPhase(enum.Enum):
    STARTING = "starting"  # launched, not yet connected
    IDLE = "idle"  # connected, no job
    JOINING = "joining"  # limits of the job being applied
    SERVING = "serving"  # running the job's batches
    EXITING = "exiting"  # connection closed; its exit is being reaped


@dataclass
class WorkerSlot:
    wid: int
    image: str
    gpus: int = 0
    phase: WorkerPhase = WorkerPhase.STARTING
    job_id: str | None = None  # set while JOINING / SERVING
    outstanding: deque[InputBatchView] = field(default_factory=deque)
    kill_reason: str | None = None


@dataclass
class JobSlot:
    assign: AssignJob
    pending: deque[InputBatchView] = field(default_factory=deque)
    start_failures: int = 0  # workers in the job's image that exited before connecting
    log_sources: deque[int] = field(default_factory=deque)  # worker of each log batch sent, oldest first

    @property
    def job_id(self) -> str:
        return self.assign.job_id


class NodeState:
    def __init__(self, node_id: str, n_workers: int, default_image: str = "",
                 rng: Callable[[], float] = random.random) -> None:
        self.node_id = node_id
        self._rng = rng  # the backoff's jitter (a parameter, so tests can fix it)
        self.n_workers = n_workers
        self.default_image = default_image
        self.workers: dict[int, WorkerSlot] = {}
        self.job: JobSlot | None = None
        self._next_wid = 0
        self._spawn_failures = 0

    # --- events: life of the node ------------------------------------------------------

    def start(self) -> list[Command]:
        """The warm pool: ``n_workers`` workers in the default image."""
        return [self._spawn(self.default_image) for _ in range(self.n_workers)]

    def assign(self, assign: AssignJob) -> list[Command]:
        """The node now serves this job (any previous one ends first)."""
        cmds = self.release()
        job = self.job = JobSlot(assign)
        # Fitting workers first; then the others make room for the job's own.
        for w in sorted(self.workers.values(), key=lambda w: not self._fits(w, job)):
            cmds += self._give_job(w)
        return cmds

    def batch(self, batch: InputBatchView) -> list[Command]:
        if self.job is None or self.job.job_id != batch.job_id:
            return []  # for a job this node no longer serves
        self.job.pending.append(batch)
        return self._pump()

    def release(self, job_id: str | None = None) -> list[Command]:
        """End the job here (``job_id`` None: whichever it is): idle workers
        are reset, busy ones killed (the head has requeued their batches)."""
        job = self.job
        if job is None or (job_id is not None and job.job_id != job_id):
            return []
        self.job = None
        cmds: list[Command] = []
        for w in self.workers.values():
            if w.job_id != job.job_id:
                continue
            was_serving = w.phase is WorkerPhase.SERVING
            w.job_id, w.phase = None, WorkerPhase.IDLE
            if w.outstanding:
                w.outstanding.clear()
                cmds += self._kill(w, "job ended while it was running")
            elif was_serving:
                cmds.append(ToWorker(w.wid, EndJob(job.job_id)))
        return cmds

    def restart(self) -> list[Command]:
        """Replace every worker now (the dashboard's restart)."""
        cmds = self.release()
        for w in self.workers.values():
            cmds += self._kill(w, "node restarted")
        return cmds

    # --- events: workers ---------------------------------------------------------------------

    def worker_hello(self, wid: int) -> list[Command]:
        """Worker ``wid`` connected.  Raises KeyError for a worker this node did not start."""
        w = self.workers[wid]
        if w.phase is not WorkerPhase.STARTING:
            raise KeyError(wid)
        w.phase = WorkerPhase.IDLE
        self._spawn_failures = 0
        return self._give_job(w)

    def limits_applied(self, wid: int, job_id: str, ok: bool) -> list[Command]:
        w = self.workers.get(wid)
        if w is None or w.phase is not WorkerPhase.JOINING or w.job_id != job_id:
            return []  # gone, or the job changed meanwhile
        job = self.job
        if not ok or job is None or job.job_id != job_id:
            w.phase, w.job_id = WorkerPhase.IDLE, None  # not ok: the container vanished, its exit replaces it
            return [] if not ok else self._give_job(w)
        w.phase = WorkerPhase.SERVING
        a = job.assign
        return [ToWorker(wid, StartJob(a.job_id, a.function, a.func_timeout)), *self._pump()]

    def worker_result(self, wid: int, rb: ResultBatchView) -> list[Command]:
        """Results of consecutive inputs of the worker's oldest batch: the whole
        batch, or a part streamed while the rest still runs.  The part that
        reaches the batch's last input completes it."""
        w = self.workers.get(wid)
        if w is None or not w.outstanding:
            return []  # a batch of an ended job
        b = w.outstanding[0]
        end = b.start + len(b.ends)
        if not b.start <= rb.start < end:
            return []
        if rb.start + len(rb.ends) < end:
            return [ToHead(rb)]
        w.outstanding.popleft()
        return [ToHead(rb), *self._pump()]

    def worker_logs(self, wid: int, logs: LogBatch) -> list[Command]:
        job = self.job
        if job is None or job.job_id != logs.job_id:
            return []  # lines of a job this node no longer serves
        job.log_sources.append(wid)
        return [ToHead(logs)]

    def log_ack(self, ack: LogAck) -> list[Command]:
        """The client printed the oldest ``ack.batches`` log batches: give each
        worker that sent one its log credit back (``runtime._worker.LogWindow``)."""
        job = self.job
        if job is None or job.job_id != ack.job_id:
            return []
        counts = Counter(job.log_sources.popleft() for _ in range(min(ack.batches, len(job.log_sources))))
        return [ToWorker(wid, LogAck(ack.job_id, n)) for wid, n in counts.items()]

    def worker_setup_failed(self, wid: int, failed: JobSetupFailed) -> list[Command]:
        return [ToHead(failed)]

    def worker_disconnected(self, wid: int) -> list[Command]:
        """Worker ``wid``'s connection ended: nothing more is routed to it
        (``worker_exited`` follows once the process is gone)."""
        w = self.workers.get(wid)
        if w is not None:
            w.phase = WorkerPhase.EXITING
        return []

    def spawn_failed(self, wid: int, message: str) -> list[Command]:
        """The launcher could not start worker ``wid`` (e.g. its image is missing)."""
        self.workers.pop(wid, None)
        return [*self._setup_failure(message), self._respawn()]

    def worker_exited(self, wid: int, reason: str, crashed_index: int = -1) -> list[Command]:
        """Worker ``wid`` is gone (its connection read to the end, if it had
        one); ``crashed_index`` is the input its status file names."""
        w = self.workers.pop(wid, None)
        if w is None:
            return []
        if w.phase is WorkerPhase.STARTING:
            return self._never_connected(w, reason)
        reason = w.kill_reason or reason
        cmds: list[Command] = []
        for b in w.outstanding:
            inside = b.start <= crashed_index < b.start + len(b.ends)
            cmds.append(ToHead(BatchLost(b.job_id, b.start, crashed_index if inside else -1, reason)))
        if w.outstanding:
            log.warning("worker %d died holding %d batch(es): %s", wid, len(w.outstanding), reason)
        cmds.append(self._spawn(self._wanted_image()))
        return cmds

    def replace_worker(self) -> list[Command]:
        """A ``Respawn`` came due: start a worker if the pool is short."""
        if len(self.workers) >= self.n_workers:
            return []
        return [self._spawn(self._wanted_image())]

    def call_running(self, wid: int, index: int, elapsed: float) -> list[Command]:
        """The watchdog's sample: worker ``wid`` has run input ``index`` for
        ``elapsed`` seconds.  Past func_timeout + TIMEOUT_GRACE (the call
        ignored the alarm, e.g. stuck in C code) the worker is killed; its
        input is retried, then fails the job with WorkerCrashed."""
        w, job = self.workers.get(wid), self.job
        timeout = job.assign.func_timeout if job else 0.0
        if w is None or job is None or w.job_id != job.job_id or not timeout or index < 0:
            return []
        if elapsed <= timeout + TIMEOUT_GRACE:
            return []
        return self._kill(w, f"the call of input {index} ran {elapsed:.1f}s, past func_timeout={timeout:g}s, "
                             "without yielding to the timeout (stuck in C code?)")

    def memory_used(self, wid: int, rss: int) -> list[Command]:
        """The watchdog's sample of a worker process's RSS: over func_ram, it is killed."""
        w, job = self.workers.get(wid), self.job
        limit = job.assign.func_ram if job else 0
        if w is None or job is None or w.job_id != job.job_id or not limit or rss <= limit:
            return []
        return self._kill(w, f"used {rss / 2**20:.0f} MiB, over func_ram={limit / 2**20:.0f} MiB")

    # --- queries ---------------------------------------------------------------------------------

    def serving(self) -> list[int]:
        """Workers running the current job's calls (what the watchdog samples)."""
        job = self.job
        if job is None:
            return []
        return [w.wid for w in self.workers.values() if w.job_id == job.job_id and w.phase is WorkerPhase.SERVING]

    # --- internals -------------------------------------------------------------------------------

    def _spawn(self, image: str) -> Spawn:
        wid = self._next_wid
        self._next_wid += 1
        job = self.job
        gpus = job.assign.func_gpu if job and self._job_image(job) == image else 0
        self.workers[wid] = WorkerSlot(wid, image, gpus)
        return Spawn(wid, image, gpus)

    def _respawn(self) -> Respawn:
        """Replace a worker that never came up, backing off while that keeps happening."""
        self._spawn_failures += 1
        return Respawn(backoff(self._spawn_failures, 0.5, RESPAWN_MAX_DELAY, self._rng))

    def _never_connected(self, w: WorkerSlot, reason: str) -> list[Command]:
        log.warning("worker %d exited (%s) before connecting; replacing it", w.wid, reason)
        cmds: list[Command] = []
        job = self.job
        if job is not None and w.image == self._job_image(job):
            job.start_failures += 1
            if job.start_failures == START_FAILURES_FATAL:  # the job would wait forever for its workers
                cmds += self._setup_failure(f"workers in image {w.image!r} exit before connecting ({reason}): "
                                            "the image needs python3 >= 3.10 on its PATH")
        return [*cmds, self._respawn()]

    def _setup_failure(self, message: str) -> list[Command]:
        if self.job is None:
            return []
        return [ToHead(JobSetupFailed(self.job.job_id, f"node {self.node_id}: {message}", "JobFailed"))]

    def _kill(self, w: WorkerSlot, reason: str) -> list[Command]:
        w.kill_reason = w.kill_reason or reason
        return [Kill(w.wid)]

    def _job_image(self, job: JobSlot) -> str:
        return job.assign.image or self.default_image

    def _fits(self, w: WorkerSlot, job: JobSlot) -> bool:
        return w.image == self._job_image(job) and w.gpus >= job.assign.func_gpu

    def _job_workers(self, job: JobSlot) -> int:
        return sum(1 for w in self.workers.values() if w.job_id == job.job_id)

    def _wanted_image(self) -> str:
        """A replacement worker serves the current job if it lacks workers."""
        job = self.job
        if job is not None and self._job_workers(job) < job.assign.n_workers:
            return self._job_image(job)
        return self.default_image

    def _give_job(self, w: WorkerSlot) -> list[Command]:
        """Attach an idle worker of the right image to the job if it needs one."""
        job = self.job
        if job is None or w.phase is not WorkerPhase.IDLE or w.kill_reason is not None:
            return []
        if self._job_workers(job) >= job.assign.n_workers:
            return []
        if not self._fits(w, job):
            # An idle worker in the wrong image or without the GPUs (e.g. one still
            # starting when the job arrived) makes room for one that fits.
            return self._kill(w, "replaced by a worker in the job's image")
        w.phase, w.job_id = WorkerPhase.JOINING, job.job_id
        a = job.assign
        return [ApplyLimits(w.wid, a.job_id, a.func_cpu, a.func_ram, a.func_gpu)]

    def _pump(self) -> list[Command]:
        """Hand pending batches to the job's least-loaded workers, at most
        ``prefetch`` each (the rest wait here for a worker to free up)."""
        job = self.job
        if job is None or not job.pending:
            return []
        cmds: list[Command] = []
        prefetch = max(job.assign.prefetch, 1)
        mine = [w for w in self.workers.values() if w.job_id == job.job_id and w.phase is WorkerPhase.SERVING]
        while job.pending:
            room = [w for w in mine if len(w.outstanding) < prefetch]
            if not room:
                break
            w = min(room, key=lambda x: len(x.outstanding))
            b = job.pending.popleft()
            w.outstanding.append(b)
            cmds += [ToWorker(w.wid, b), ToHead(BatchAssigned(b.job_id, b.start, w.wid))]
        return cmds
