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

* The node serves one job, or several jobs of one job tree (a job's nested
  calls: ``AssignJob.guest``), each on workers of its own.  The pool is
  ``n_workers`` warm workers; a guest job that finds none idle gets new ones,
  and workers above what the remaining jobs need are stopped once idle.
* A batch the head sent for a job it serves is in exactly one place: the
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
* At most ``AssignJob.n_workers`` workers are JOINING or SERVING each job.
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
from ._node_commands import ApplyLimits, Command, Kill, PrepareEnvironment, Respawn, Spawn, ToHead, ToWorker
from ._status import LOADING

__all__ = ["ApplyLimits", "Command", "Kill", "NodeState", "PrepareEnvironment", "Respawn", "Spawn", "ToHead",
           "ToWorker", "WorkerPhase", "WorkerSlot"]
log = logging.getLogger("burla.node")

TIMEOUT_GRACE = 2.0  # seconds past func_timeout before the node kills a call that ignored the alarm
START_FAILURES_FATAL = 3  # workers of one job that exit before connecting before the job is failed
RESPAWN_MAX_DELAY = 10.0  # seconds: backoff cap between replacements of workers that never come up
# Workers of one job that die in a row on a node, with no result in between, outside any call (loading
# the function, between inputs): no input can be charged, so past this many the job fails (issue 11).
UNEXPLAINED_DEATHS_FATAL = 5


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
    # The environment its jobs imported from (JobSlot.env; None: it served none yet).  Modules
    # stay imported, so it serves only jobs of that environment: another needs a fresh worker.
    env: str | None = None


@dataclass
class JobSlot:
    assign: AssignJob
    pending: deque[InputBatchView] = field(default_factory=deque)
    start_failures: int = 0  # workers in the job's image that exited before connecting
    log_sources: deque[int] = field(default_factory=deque)  # worker of each log batch sent, oldest first
    unexplained_deaths: int = 0  # workers that died outside any call since the job's last result here
    env: str | None = ""  # the job's environment directory ("": none needed); None while it is being made

    @property
    def job_id(self) -> str:
        return self.assign.job_id


class NodeState:
    def __init__(self, node_id: str, n_workers: int, default_image: str = "",
                 rng: Callable[[], float] = random.random, prepares_environments: bool = False) -> None:
        self.node_id = node_id
        # Workers in containers of an image: a job's requirements are installed before its first call.
        # (Process workers share the node's interpreter: they have what the node has.)
        self.prepares_environments = prepares_environments
        self._rng = rng  # the backoff's jitter (a parameter, so tests can fix it)
        self.n_workers = n_workers
        self.default_image = default_image
        self.workers: dict[int, WorkerSlot] = {}
        self.jobs: dict[str, JobSlot] = {}  # oldest first: the node's job, then guests of its tree
        self._next_wid = 0
        self._spawn_failures = 0

    # --- events: life of the node ------------------------------------------------------

    def start(self) -> list[Command]:
        """The warm pool: ``n_workers`` workers in the default image."""
        return [self._spawn(self.default_image) for _ in range(self.n_workers)]

    @property
    def job(self) -> JobSlot | None:
        """The node's job (the oldest it serves), if any."""
        return next(iter(self.jobs.values()), None)

    def assign(self, assign: AssignJob) -> list[Command]:
        """The node now serves this job: alone (any previous ones end first), or
        beside them as a guest of their job tree."""
        cmds = [] if assign.guest else self.release()
        if assign.job_id in self.jobs:
            return cmds
        job = self.jobs[assign.job_id] = JobSlot(assign)
        if self.prepares_environments and assign.requirements:
            job.env = None  # no worker joins it before its environment is in place
            return [*cmds, PrepareEnvironment(assign.job_id, self._job_image(job), assign)]
        return cmds + self._staff(job)

    def environment_ready(self, job_id: str, path: str) -> list[Command]:
        job = self.jobs.get(job_id)
        if job is None or job.env is not None:
            return []  # released meanwhile
        job.env = path
        return self._staff(job)

    def environment_failed(self, job_id: str, message: str) -> list[Command]:
        job = self.jobs.get(job_id)
        if job is None or job.env is not None:
            return []
        return self._setup_failure(job, message)

    def _staff(self, job: JobSlot) -> list[Command]:
        cmds: list[Command] = []
        # Fitting workers first; then the others make room for the job's own.
        for w in sorted(self.workers.values(), key=lambda w: not self._fits(w, job)):
            cmds += self._give_job(w)
        return cmds + self._grow()

    def batch(self, batch: InputBatchView) -> list[Command]:
        job = self.jobs.get(batch.job_id)
        if job is None:
            return []  # for a job this node no longer serves
        job.pending.append(batch)
        return self._pump(job)

    def release(self, job_id: str | None = None) -> list[Command]:
        """End a job here (``job_id`` None: every one): its idle workers are
        reset, busy ones killed (the head has requeued their batches)."""
        ended = list(self.jobs) if job_id is None else [job_id] if job_id in self.jobs else []
        cmds: list[Command] = []
        for jid in ended:
            del self.jobs[jid]
            for w in self.workers.values():
                if w.job_id != jid:
                    continue
                was_serving = w.phase is WorkerPhase.SERVING
                w.job_id, w.phase = None, WorkerPhase.IDLE
                if w.outstanding:
                    w.outstanding.clear()
                    cmds += self._kill(w, "job ended while it was running")
                elif was_serving:
                    cmds.append(ToWorker(w.wid, EndJob(jid)))
        for w in self.workers.values():  # workers the remaining jobs still lack
            cmds += self._give_job(w)
        return cmds + self._trim()

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
        return self._give_job(w) + self._trim()

    def limits_applied(self, wid: int, job_id: str, ok: bool) -> list[Command]:
        w = self.workers.get(wid)
        if w is None or w.phase is not WorkerPhase.JOINING or w.job_id != job_id:
            return []  # gone, or the job changed meanwhile
        job = self.jobs.get(job_id)
        if not ok or job is None:
            w.phase, w.job_id = WorkerPhase.IDLE, None  # not ok: the container vanished, its exit replaces it
            return [] if not ok else self._give_job(w)
        w.phase = WorkerPhase.SERVING
        a = job.assign
        paths = [job.env] if job.env else []
        return [ToWorker(wid, StartJob(a.job_id, a.function, a.func_timeout, paths)), *self._pump(job)]

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
        job = self.jobs.get(w.job_id or "")
        if job is not None:
            job.unexplained_deaths = 0
        return [ToHead(rb), *(self._pump(job) if job else [])]

    def worker_logs(self, wid: int, logs: LogBatch) -> list[Command]:
        job = self.jobs.get(logs.job_id)
        if job is None:
            return []  # lines of a job this node no longer serves
        job.log_sources.append(wid)
        return [ToHead(logs)]

    def log_ack(self, ack: LogAck) -> list[Command]:
        """The client printed the oldest ``ack.batches`` log batches: give each
        worker that sent one its log credit back (``runtime._worker.LogWindow``)."""
        job = self.jobs.get(ack.job_id)
        if job is None:
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
        w = self.workers.pop(wid, None)
        job = self._job_wanting(w.image) if w is not None else None
        return [*(self._setup_failure(job, message) if job else []), self._respawn()]

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
        job = self.jobs.get(w.job_id or "")
        if job is not None and crashed_index < 0 and w.kill_reason is None:
            cmds += self._unexplained_death(job, reason, crashed_index == LOADING)
        for b in w.outstanding:
            inside = b.start <= crashed_index < b.start + len(b.ends)
            cmds.append(ToHead(BatchLost(b.job_id, b.start, crashed_index if inside else -1, reason)))
        if w.outstanding:
            log.warning("worker %d died holding %d batch(es): %s", wid, len(w.outstanding), reason)
        return cmds + self._grow()

    def replace_worker(self) -> list[Command]:
        """A ``Respawn`` came due: start a worker if the pool is short."""
        return self._grow(1)

    def call_running(self, wid: int, index: int, elapsed: float) -> list[Command]:
        """The watchdog's sample: worker ``wid`` has run input ``index`` for
        ``elapsed`` seconds.  Past func_timeout + TIMEOUT_GRACE (the call
        ignored the alarm, e.g. stuck in C code) the worker is killed; its
        input is retried, then fails the job with WorkerCrashed."""
        w = self.workers.get(wid)
        job = self.jobs.get(w.job_id or "") if w is not None else None
        timeout = job.assign.func_timeout if job else 0.0
        if w is None or job is None or not timeout or index < 0:
            return []
        if elapsed <= timeout + TIMEOUT_GRACE:
            return []
        return self._kill(w, f"the call of input {index} ran {elapsed:.1f}s, past func_timeout={timeout:g}s, "
                             "without yielding to the timeout (stuck in C code?)")

    def memory_used(self, wid: int, rss: int) -> list[Command]:
        """The watchdog's sample of a worker process's RSS: over func_ram, it is killed."""
        w = self.workers.get(wid)
        job = self.jobs.get(w.job_id or "") if w is not None else None
        limit = job.assign.func_ram if job else 0
        if w is None or job is None or not limit or rss <= limit:
            return []
        return self._kill(w, f"used {rss / 2**20:.0f} MiB, over func_ram={limit / 2**20:.0f} MiB")

    # --- queries ---------------------------------------------------------------------------------

    def serving(self) -> list[tuple[int, JobSlot]]:
        """Workers running a job's calls, with the job (what the watchdog samples)."""
        return [(w.wid, self.jobs[w.job_id]) for w in self.workers.values()
                if w.job_id in self.jobs and w.phase is WorkerPhase.SERVING]

    # --- internals -------------------------------------------------------------------------------

    def _spawn(self, image: str) -> Spawn:
        wid = self._next_wid
        self._next_wid += 1
        job = self._job_wanting(image)
        gpus = job.assign.func_gpu if job else 0
        self.workers[wid] = WorkerSlot(wid, image, gpus)
        return Spawn(wid, image, gpus)

    def _respawn(self) -> Respawn:
        """Replace a worker that never came up, backing off while that keeps happening."""
        self._spawn_failures += 1
        return Respawn(backoff(self._spawn_failures, 0.5, RESPAWN_MAX_DELAY, self._rng))

    def _never_connected(self, w: WorkerSlot, reason: str) -> list[Command]:
        log.warning("worker %d exited (%s) before connecting; replacing it", w.wid, reason)
        cmds: list[Command] = []
        job = self._job_wanting(w.image)
        if job is not None:
            job.start_failures += 1
            if job.start_failures == START_FAILURES_FATAL:  # the job would wait forever for its workers
                cmds += self._setup_failure(job, f"workers in image {w.image!r} exit before connecting ({reason}): "
                                                 "the image needs python3 >= 3.10 on its PATH")
        return [*cmds, self._respawn()]

    def _setup_failure(self, job: JobSlot, message: str, kind: str = "JobFailed") -> list[Command]:
        return [ToHead(JobSetupFailed(job.job_id, f"node {self.node_id}: {message}", kind))]

    def _unexplained_death(self, job: JobSlot, reason: str, loading: bool) -> list[Command]:
        """A worker of ``job`` died outside any call: charged to the job, which
        fails once ``UNEXPLAINED_DEATHS_FATAL`` die in a row without a result."""
        job.unexplained_deaths += 1
        if job.unexplained_deaths != UNEXPLAINED_DEATHS_FATAL:
            return []
        where = "while unpickling the function" if loading else "between calls, not while running an input"
        return self._setup_failure(job, f"{UNEXPLAINED_DEATHS_FATAL} workers of this job died in a row {where}, "
                                        f"with no result in between (last: {reason}); not restarting more",
                                   "WorkerCrashed")

    def _kill(self, w: WorkerSlot, reason: str) -> list[Command]:
        w.kill_reason = w.kill_reason or reason
        return [Kill(w.wid)]

    def _job_image(self, job: JobSlot) -> str:
        return job.assign.image or self.default_image

    def _fits(self, w: WorkerSlot, job: JobSlot) -> bool:
        return (w.image == self._job_image(job) and w.gpus >= job.assign.func_gpu
                and (w.env is None or w.env == job.env))

    def _job_workers(self, job: JobSlot) -> int:
        return sum(1 for w in self.workers.values() if w.job_id == job.job_id)

    def _lacking(self) -> list[JobSlot]:
        """Jobs ready for workers (their environment in place) with fewer than they were assigned, oldest first."""
        return [j for j in self.jobs.values() if j.env is not None and self._job_workers(j) < j.assign.n_workers]

    def _job_wanting(self, image: str) -> JobSlot | None:
        """The oldest job lacking workers in ``image``."""
        return next((j for j in self._lacking() if self._job_image(j) == image), None)

    def _wanted_image(self) -> str:
        """A new worker serves the oldest job that lacks workers, if any."""
        lacking = self._lacking()
        return self._job_image(lacking[0]) if lacking else self.default_image

    def _needed(self) -> int:
        """Workers the node keeps: its warm pool, or what its jobs take if more
        (the node's job uses the pool, a guest job workers of its own)."""
        jobs = list(self.jobs.values())
        guests = sum(j.assign.n_workers for j in jobs[1:])
        return max(self.n_workers, (jobs[0].assign.n_workers if jobs else 0) + guests)

    def _grow(self, limit: int | None = None) -> list[Command]:
        """Start workers up to what is needed (at most ``limit``)."""
        cmds: list[Command] = []
        while len(self.workers) < self._needed() and (limit is None or len(cmds) < limit):
            cmds.append(self._spawn(self._wanted_image()))
        return cmds

    def _trim(self) -> list[Command]:
        """Stop idle workers above what is needed (a guest job's, after it ended)."""
        cmds: list[Command] = []
        live = [w for w in self.workers.values() if w.kill_reason is None and w.phase is not WorkerPhase.EXITING]
        extra = len(live) - self._needed()
        for w in live:
            if extra <= 0:
                break
            if w.phase is WorkerPhase.IDLE:
                cmds += self._kill(w, "not needed once its job ended")
                extra -= 1
        return cmds

    def _give_job(self, w: WorkerSlot) -> list[Command]:
        """Attach an idle worker to the oldest job that lacks one it fits."""
        if w.phase is not WorkerPhase.IDLE or w.kill_reason is not None:
            return []
        lacking = self._lacking()
        job = next((j for j in lacking if self._fits(w, j)), None)
        if job is None:
            # An idle worker in the wrong image or environment or without the GPUs (e.g.
            # one still starting when the job arrived) makes room for one that fits.
            return self._kill(w, "replaced by a worker in the job's image and environment") if lacking else []
        w.phase, w.job_id, w.env = WorkerPhase.JOINING, job.job_id, job.env
        a = job.assign
        return [ApplyLimits(w.wid, a.job_id, a.func_cpu, a.func_ram, a.func_gpu)]

    def _pump(self, job: JobSlot) -> list[Command]:
        """Hand the job's pending batches to its least-loaded workers, at most
        ``prefetch`` each (the rest wait here for a worker to free up)."""
        if not job.pending:
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
