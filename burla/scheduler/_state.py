"""The head's scheduling core: typed events in, typed commands out, no I/O.

``HeadState`` owns the node registry and every job.  The networking layer
(``_head.Head``) turns each received message or disconnect into one method
call and sends the returned ``ToNode`` / ``ToClient`` commands.

Each event costs O(what it changes), never O(nodes) or O(jobs): the node
registry and the nodes' hand-over between jobs live in ``_placement``
(issue 10: 1,000 nodes x 10 slots, about 7 us of head CPU per event).

Invariants (checked by tests/scheduler/test_state.py):

* A node serves one job tree at a time (nodes are single-tenant): its job,
  plus guests -- nested jobs of the same tree that found no free node, on
  workers of their own, at most ``n_workers`` slots per nesting depth.  It
  changes hands only when it holds no batch of its job: between calls (and a
  guest of the tree inherits it while it still has calls there).
* A job that wants nodes gets its fair share (nodes / jobs holding or
  wanting nodes) as soon as the calls running on the nodes it takes end.
* Every input batch the head accepted is in exactly one place: the job's
  queue, ``job.inflight`` (sent to one node), or delivered to the client.
  A batch on a node that dies or loses its worker goes back to the queue, so
  a dead node or worker never loses an input.
* A result is forwarded to the client at most once: results must be the
  next consecutive part of a batch in flight on the sending node (a batch may
  come back in parts, ``progress``), anything else is dropped; a batch lost
  after some parts came back is requeued without them.
* Memory per job is bounded: the client may have at most
  ``input_queue_batches`` batches queued here (credit), and at most
  ``result_window`` batches are in flight or delivered-but-unacknowledged.
  A client that stops acknowledging results therefore stalls its job.
* Print output is bounded like results: every LogBatch forwarded to the
  client is acknowledged by it (``LogAck``) before its worker's log credit
  comes back (``runtime._worker.LogWindow``), so a client that stops reading
  stalls the printing worker, and no line is dropped.
* An input that crashed its worker more than ``max_retries`` times fails the
  job with WorkerCrashed naming it; other inputs of that batch are requeued
  without being charged.
* With a durable queue backend (``durable``), a restarted head restores each
  stored job (``restore``) as an orphan that runs nothing until its client
  resumes it (``resume``) -- within ``resume_timeout``, or it is canceled.
  A job that ended stays stored (``finished``) until its client says it
  holds the end (``ended_ack``): a head that dies before its last results
  and JobEnded went out sends them again after its restart.
"""

from __future__ import annotations

from collections import Counter

from ..transport.messages import (
    ALL_INPUTS,
    INITIAL_INPUT_CREDIT,
    AnyInputBatch,
    AnyResultBatch,
    AssignJob,
    InputCredit,
    InputsStored,
    JobAccepted,
    JobAttached,
    JobEnded,
    JobError,
    JobInfo,
    JobNotice,
    JobResumed,
    LogAck,
    LogBatch,
    ReleaseJob,
    RestartNode,
    SubmitJob,
)
from . import _flow
from ._batches import crash_message, remaining, split_around
from ._installs import Installs
from ._journal import (
    AttemptCharged,
    Fact,
    InputsAdded,
    InputsComplete,
    JobCreated,
    JobFinished,
    JobForgotten,
    ResultFinal,
    ResultsAcked,
)
from ._placement import Placement
from ._queue import BatchQueue, InProcessQueue
from ._records import Command, FinishedJob, HeadConfig, JobState, NodeState, ToClient, ToNode
from ._restore import Restored

__all__ = ["ORPHAN", "Command", "HeadConfig", "HeadState", "JobState", "NodeState", "ToClient", "ToNode"]
ORPHAN = ""  # the client of a restored job until its client resumes it


class HeadState:
    def __init__(self, config: HeadConfig = HeadConfig(), queue: BatchQueue | None = None):
        self.config = config
        self.queue: BatchQueue = queue if queue is not None else InProcessQueue()
        self.placement = Placement(config.prefetch_per_worker)
        self.pool = self.placement.pool
        self.jobs: dict[str, JobState] = {}
        self._by_client: dict[str, dict[str, None]] = {}
        self.installs = Installs()  # nodes installing a job's environment, as the client is told
        self.facts: list[Fact] = []  # for the queue backend, since the last take_facts (_journal)
        self.durable = False  # the backend outlives the head: clients are told what it holds
        self.finished: dict[str, FinishedJob] = {}  # durable: ended, until the client holds the end
        self._readers: dict[str, set[str]] = {}  # client -> the detached jobs it reads

    def take_facts(self) -> list[Fact]:
        facts, self.facts = self.facts, []
        return facts

    @property
    def nodes(self) -> dict[str, NodeState]:
        return self.pool.nodes

    @property
    def wanting(self) -> dict[str, JobState]:
        return self.placement.wanting

    # --- events: nodes ----------------------------------------------------------

    def node_joined(self, node: NodeState) -> list[Command]:
        self.placement.joined(node)
        return self._finish([])

    def node_left(self, node_id: str) -> list[Command]:
        node = self.placement.left(node_id)
        if node is None:
            return []
        self.installs.node_left(node_id)
        cmds: list[Command] = []
        for job in self._jobs_on(node):
            held = job.held[node_id]
            text = f"node {node_id} was lost; its {held} input batch(es) will run on other nodes"
            cmds.append(ToClient(job.client_id, JobNotice(job.job_id, text)))
            self._take_back(job, node)
            cmds += self._settle(job)
        return self._finish(cmds)

    def restart_node(self, node_id: str) -> list[Command]:
        """Replace a node's workers; work it held goes back to the queue."""
        node = self.nodes.get(node_id)
        if node is None:
            return []
        jobs = self._jobs_on(node)
        for job in jobs:
            self._take_back(job, node)
        cmds: list[Command] = [*(ToNode(node_id, ReleaseJob(j.job_id)) for j in jobs), ToNode(node_id, RestartNode())]
        for job in jobs:
            cmds += self._settle(job)
        if node.job_id is None:
            self.placement.freed.append(node)
        return self._finish(cmds)

    def _jobs_on(self, node: NodeState) -> list[JobState]:
        """The node's job and its guests."""
        ids = [node.job_id] if node.job_id else []
        return [self.jobs[j] for j in [*ids, *node.guests] if j in self.jobs]

    def _take_back(self, job: JobState, node: NodeState) -> None:
        """Detach a node from a job, requeueing (uncharged) what the job had there."""
        for key in sorted((k for k in node.inflight if k[0] == job.job_id), reverse=True):
            node.inflight.discard(key)
            _, batch = job.inflight.pop(key[1])
            rest = remaining(batch, job.progress.pop(key[1], 0))
            job.held_bytes += _size(rest) - _size(batch)
            self.queue.push_front(job.job_id, rest)
        self.placement.detach(job, node)

    def batch_lost(self, node_id: str, job_id: str, start: int, crashed_index: int, reason: str) -> list[Command]:
        """A worker died holding this batch; ``crashed_index`` is the input it
        was running (-1: none), every other input of the batch is requeued."""
        job = self.jobs.get(job_id)
        node = self.nodes.get(node_id)
        if job is None or node is None or (job_id, start) not in node.inflight:
            return []
        batch = self._unhold(job, node, start)
        job.held_bytes -= _size(batch)
        batch = remaining(batch, job.progress.pop(start, 0))
        parts = split_around(batch, crashed_index)
        for part in reversed(parts):
            if part.start == crashed_index:
                part.attempt += 1
                self.facts.append(AttemptCharged(job_id, crashed_index, part.attempt))
                if part.attempt > job.spec.max_retries:
                    why = crash_message(crashed_index, part.attempt, reason)
                    return self._end(job, "failed", JobError("WorkerCrashed", why, crashed_index))
            job.held_bytes += _size(part)
            self.queue.push_front(job_id, part)
        cmds = self._node_changed(job, node)
        return self._finish(cmds + self._settle(job))

    def job_setup_failed(self, job_id: str, message: str, kind: str = "FunctionLoadError") -> list[Command]:
        job = self.jobs.get(job_id)
        if job is None:
            return []
        return self._end(job, "failed", JobError(kind, message))

    def result(self, node_id: str, rb: AnyResultBatch) -> list[Command]:
        """Results of consecutive inputs of one batch in flight on the node: the
        whole batch, or the next part of it (workers stream slow batches)."""
        job = self.jobs.get(rb.job_id)
        node = self.nodes.get(node_id)
        start = self._batch_holding(job, node, rb.start) if job and node else None
        if job is None or node is None or start is None:
            return []  # late or duplicate: never deliver twice
        size = len(job.inflight[start][1].ends)
        done = job.progress.get(start, 0)
        if rb.start != start + done or done + len(rb.ends) > size:
            return []  # not the next part of that batch: a duplicate
        if job.spec.detach:  # it waits for a client to take it (the reader, if one is attached)
            job.resend.append(rb)
            job.resend_bytes += len(rb.payload)
            cmds: list[Command] = [ToClient(job.reader or ORPHAN, rb)]
        else:
            cmds = [ToClient(job.client_id, rb)]
            job.unacked += 1
        self.facts.append(ResultFinal(rb))
        if done + len(rb.ends) == size:
            job.held_bytes -= _size(self._unhold(job, node, start))
            job.progress.pop(start, None)
            cmds += self._node_changed(job, node)
        else:
            job.progress[start] = done + len(rb.ends)
        job.delivered += len(rb.ends)
        if rb.durations:
            mean = sum(rb.durations) / len(rb.durations)
            job.call_seconds = mean if not job.call_seconds else 0.8 * job.call_seconds + 0.2 * mean
        if job.total is not None and job.delivered >= job.total:
            return cmds + self._end(job, "done", None)
        return self._finish(cmds + self._settle(job))

    @staticmethod
    def _batch_holding(job: JobState, node: NodeState, index: int) -> int | None:
        """The start of the batch in flight on ``node`` that holds input ``index``."""
        if (job.job_id, index) in node.inflight:
            return index
        for job_id, start in node.inflight:  # at most workers x prefetch batches
            if job_id == job.job_id and start <= index < start + len(job.inflight[start][1].ends):
                return start
        return None

    def logs(self, node_id: str, logs: LogBatch) -> list[Command]:
        """Print output of a job's worker: to the client, which acks it (``log_ack``)."""
        job = self.jobs.get(logs.job_id)
        node = self.nodes.get(node_id)
        if job is None or node is None or node_id not in job.nodes:
            return []  # the job ended or left that node: its worker is being reset or killed
        reader = job.reader if job.spec.detach else job.client_id
        if not reader:  # a detached job no one reads: its prints are dropped, never stall it
            return [ToNode(node_id, LogAck(job.job_id, 1))]
        job.log_sources.append(node_id)
        return [ToClient(reader, logs)]

    # --- events: clients ----------------------------------------------------------

    def submit(self, client_id: str, spec: SubmitJob, now: float) -> list[Command]:
        if spec.job_id in self.jobs:
            return []
        job = JobState(spec, client_id, now)
        parent = self.jobs.get(spec.parent) if spec.parent else None
        job.root, job.depth = (parent.root, parent.depth + 1) if parent else (spec.job_id, 0)
        self.jobs[spec.job_id] = job
        self._by_client.setdefault(client_id, {})[spec.job_id] = None
        self.queue.create(spec.job_id)
        self.facts.append(JobCreated(spec))
        if len(self.pool) and not self.pool.any_fits(spec):
            return self._end(job, "failed", JobError("NoCompatibleNodes", self.pool.incompatible(spec)))
        accepted = ToClient(client_id, JobAccepted(spec.job_id, job.workers, INITIAL_INPUT_CREDIT))
        return self._finish([accepted, *self._settle(job)])

    def input_batch(self, client_id: str, batch: AnyInputBatch) -> list[Command]:
        job = self.jobs.get(batch.job_id)
        if job is None or job.client_id != client_id:
            return []  # canceled or finished meanwhile
        if job.credit_out <= 0:
            return self._end(job, "failed", JobError("JobFailed", "client sent inputs without credit"))
        if batch.start != job.received or not batch.ends:  # a duplicate or a gap: it would run twice or never
            why = f"client sent an input batch at {batch.start} of {len(batch.ends)} input(s), expected {job.received}"
            return self._end(job, "failed", JobError("JobFailed", why))
        job.credit_out -= 1
        job.received += len(batch.ends)
        job.batches_in += 1
        job.held_bytes += _size(batch)
        job.max_batch_bytes = max(job.max_batch_bytes, _size(batch))
        self.queue.push(job.job_id, batch)
        self.facts.append(InputsAdded(batch))
        stored: list[Command] = []
        if self.durable or job.spec.detach:
            stored.append(ToClient(client_id, InputsStored(job.job_id, job.received)))
        return self._finish(stored + self._settle(job))

    def inputs_done(self, client_id: str, job_id: str, total: int) -> list[Command]:
        job = self.jobs.get(job_id)
        if job is None or job.client_id != client_id:
            return []
        job.total = total
        self.facts.append(InputsComplete(job_id, total))
        cmds: list[Command] = []
        if job.spec.detach:  # the client may go now
            cmds.append(ToClient(client_id, InputsStored(job_id, job.received, True)))
        if job.delivered >= total:
            return cmds + self._end(job, "done", None)
        return self._finish(cmds + self._settle(job))

    def result_ack(self, client_id: str, job_id: str, batches: int) -> list[Command]:
        job = self.jobs.get(job_id)
        if job is not None and job.spec.detach:
            if client_id == job.reader:
                self._take(job_id, job, batches)
                return self._finish(self._settle(job))
            return []
        if job is None and (ended := self.finished.get(job_id)) and ended.detached and ended.client_id == client_id:
            self._take(job_id, ended, batches)
            if ended.end_held and not ended.resend:
                self._forget(job_id)
            return []
        if job is None or job.client_id != client_id:
            return []
        job.unacked = max(0, job.unacked - batches)
        job.acked += batches
        self.facts.append(ResultsAcked(job_id, job.acked))
        return self._finish(self._settle(job))

    def restore(self, job: Restored, now: float) -> list[Command]:
        """A job a previous head left in the durable backend: queued again, as an orphan
        waiting for its client (``resume``) -- a detached one runs on at once."""
        spec = job.spec
        if spec.job_id in self.jobs or spec.job_id in self.finished:
            return []
        total = -1 if job.total is None else job.total
        if job.ended is not None:
            self.finished[spec.job_id] = FinishedJob(job.ended, ORPHAN, job.acked, job.results, now, spec.detach,
                                                     total=total, delivered=job.delivered)
            return []
        # (a detached job whose client had sent every input runs on without it)
        waits = not spec.detach or job.total is None
        state = self.jobs[spec.job_id] = JobState(spec, ORPHAN, now, credit_out=0, received=job.received,
                                                  delivered=job.delivered, total=job.total, acked=job.acked,
                                                  resend=job.results, orphaned_at=now if waits else None)
        state.resend_bytes = sum(len(rb.payload) for rb in job.results) if spec.detach else 0
        parent = self.jobs.get(spec.parent) if spec.parent else None
        state.root, state.depth = (parent.root, parent.depth + 1) if parent else (spec.job_id, 0)
        self._by_client.setdefault(ORPHAN, {})[spec.job_id] = None
        self.queue.create(spec.job_id)
        for batch in job.queue:
            state.held_bytes += _size(batch)
            state.max_batch_bytes = max(state.max_batch_bytes, _size(batch))
            self.queue.push(spec.job_id, batch)
        state.batches_in = max(1, len(job.queue))
        return self._finish(self._settle(state))

    def resume(self, client_id: str, job_id: str, results_held: int) -> list[Command]:
        """The client of a restored job is back, holding its first ``results_held`` result
        batches: it gets the stored ones after those, the input index to send again from,
        and credit; then the job runs."""
        ended = self.finished.get(job_id)
        if ended is not None and ended.client_id == ORPHAN:
            return self._resume_ended(client_id, ended, results_held)
        job = self.jobs.get(job_id)
        if job is None or job.client_id != ORPHAN:
            return [ToClient(client_id, JobResumed(job_id, -1, 0))]
        self._move(job, client_id)
        resend: list[AnyResultBatch] = []
        if not job.spec.detach:  # (a detached job's results are its reader's: ``attach``)
            self._take(job_id, job, results_held - job.acked)
            resend, job.resend = job.resend, []
            job.unacked = len(resend)
        if job.total is None and not job.max_batch_bytes:  # no batch stored to size credit by
            credit = INITIAL_INPUT_CREDIT
        else:
            credit = _flow.credit_room(self.config, job, self.queue.length(job_id))
        job.credit_out = credit
        cmds: list[Command] = [ToClient(client_id, JobResumed(job_id, job.received, credit))]
        cmds += [ToClient(client_id, rb) for rb in resend]
        if job.total is not None and job.delivered >= job.total:
            return cmds + self._end(job, "done", None)
        return self._finish(cmds + self._settle(job))

    def _resume_ended(self, client_id: str, job: FinishedJob, results_held: int) -> list[Command]:
        """A job that ended before the head restarted: the results its client lacks, then the end
        (a detached job's uploader gets only the end: its results stay for its readers)."""
        resumed = ToClient(client_id, JobResumed(job.ended.job_id, ALL_INPUTS, 0))
        if job.detached:
            return [resumed, ToClient(client_id, job.ended)]
        job.client_id = client_id
        self._take(job.ended.job_id, job, results_held - job.acked)
        resend, job.resend = job.resend, []
        return [resumed, *(ToClient(client_id, rb) for rb in resend), ToClient(client_id, job.ended)]

    def ended_ack(self, client_id: str, job_id: str) -> list[Command]:
        """The client holds the job's end and every result before it: forget the job."""
        job = self.finished.get(job_id)
        if job is None or job.client_id != client_id:
            return []
        job.end_held = True
        if not (job.detached and job.resend):  # a detached job's results go once taken
            self._forget(job_id)
        return []

    def _expire(self, ended: FinishedJob, now: float) -> None:
        """A detached job's results waited ``retention`` s: they go; the job says so."""
        job_id = ended.ended.job_id
        why = (f"its results waited {self.config.retention:g}s after it ended ({ended.ended.status}) and were "
               f"dropped: {sum(len(rb.ends) for rb in ended.resend)} result(s) no client took")
        self._take(job_id, ended, len(ended.resend))
        ended.ended = JobEnded(job_id, "expired", JobError("ResultsExpired", why))
        self.facts.append(JobFinished(ended.ended))
        ended.since = now

    def _take(self, job_id: str, job: JobState | FinishedJob, n: int) -> None:
        """The client holds the first ``n`` results waiting in ``job.resend`` (at most those):
        they leave it, and the backend forgets them."""
        n = min(max(0, n), len(job.resend))
        if not n:
            return
        if isinstance(job, JobState) and job.spec.detach:
            job.resend_bytes -= sum(len(rb.payload) for rb in job.resend[:n])
        del job.resend[:n]
        job.acked += n
        self.facts.append(ResultsAcked(job_id, job.acked))

    def _forget(self, job_id: str) -> None:
        del self.finished[job_id]
        self.facts.append(JobForgotten(job_id))

    def log_ack(self, client_id: str, job_id: str, batches: int) -> list[Command]:
        """The client printed its oldest ``batches`` log batches: the credit goes
        back to the nodes that sent them (still serving the job)."""
        job = self.jobs.get(job_id)
        if job is None or client_id != (job.reader if job.spec.detach else job.client_id):
            return []
        counts = Counter(job.log_sources.popleft() for _ in range(min(batches, len(job.log_sources))))
        return [ToNode(node_id, LogAck(job_id, n)) for node_id, n in counts.items()
                if node_id in job.nodes]

    def cancel(self, job_id: str, reason: str) -> list[Command]:
        """Cancel a job; a detached one that ended is forgotten, with its results."""
        job = self.jobs.get(job_id)
        if job is None:
            if job_id in self.finished and self.finished[job_id].detached:
                self._forget(job_id)
            return []
        return self._end(job, "canceled", JobError("JobCanceled", reason))

    def fail_all(self, message: str) -> list[Command]:
        """Fail every job (the queue backend is gone)."""
        cmds: list[Command] = []
        for job in list(self.jobs.values()):
            cmds += self._end(job, "failed", JobError("JobFailed", message))
        return cmds

    def client_left(self, client_id: str) -> list[Command]:
        """Cancel the client's jobs (the JobEnded it is sent goes nowhere) -- but a detached
        job whose inputs it sent runs on, and one it read waits for the next reader."""
        cmds: list[Command] = []
        for job_id in list(self._by_client.get(client_id, ())):
            job = self.jobs[job_id]
            if job.spec.detach and job.total is not None:
                self._move(job, ORPHAN)
            else:
                why = "the client disconnected before it had sent every input" if job.spec.detach else \
                    "client disconnected"
                cmds += self._end(job, "canceled", JobError("JobCanceled", why))
        for job_id in self._readers.pop(client_id, ()):
            read = self.jobs.get(job_id)
            if read is not None and read.reader == client_id:
                read.reader = None
        for job_id, ended in list(self.finished.items()):
            if ended.client_id == client_id:
                if ended.detached:
                    ended.client_id = ORPHAN
                else:
                    self._forget(job_id)
        return cmds

    def _move(self, job: JobState, client_id: str) -> None:
        """The job's client (its uploader) is now ``client_id``."""
        del self._by_client[job.client_id][job.job_id]
        if not self._by_client[job.client_id]:
            del self._by_client[job.client_id]
        job.client_id, job.orphaned_at = client_id, None
        self._by_client.setdefault(client_id, {})[job.job_id] = None

    # --- detached jobs ----------------------------------------------------------------

    def attach(self, client_id: str, job_id: str, held: int) -> list[Command]:
        """A client reads a detached job's results: those it does not hold (all stored ones
        not taken yet, the first time), then the live ones; an ended job's end after them."""
        job = self.jobs.get(job_id)
        if job is not None and job.spec.detach:
            if job.reader is not None and job.reader != client_id:
                self._readers.get(job.reader, set()).discard(job_id)  # taken over (a client back from sleep)
            job.reader = client_id
            self._readers.setdefault(client_id, set()).add(job_id)
            self._take(job_id, job, held - job.acked)
            cmds: list[Command] = [ToClient(client_id, JobAttached(job_id, True, job.acked))]
            cmds += [ToClient(client_id, rb) for rb in job.resend]
            return self._finish(cmds + self._settle(job))
        ended = self.finished.get(job_id)
        if ended is None or not ended.detached:
            return [ToClient(client_id, JobAttached(job_id, False))]
        ended.client_id = client_id
        self._take(job_id, ended, held - ended.acked)
        return [ToClient(client_id, JobAttached(job_id, True, ended.acked)),
                *(ToClient(client_id, rb) for rb in ended.resend), ToClient(client_id, ended.ended)]

    def query(self, job_id: str) -> JobInfo:
        job = self.jobs.get(job_id)
        if job is not None:
            state = "waiting" if job.client_id == ORPHAN and not job.spec.detach else "running"
            return JobInfo(job_id, state, -1 if job.total is None else job.total, job.delivered,
                           sum(len(rb.ends) for rb in job.resend), job.spec.detach)
        ended = self.finished.get(job_id)
        if ended is not None:
            return JobInfo(job_id, ended.ended.status, ended.total, ended.delivered,
                           sum(len(rb.ends) for rb in ended.resend), ended.detached, ended.ended.error)
        return JobInfo(job_id, "unknown")

    def may_cancel(self, client_id: str, job_id: str) -> bool:
        """Its client may cancel a job; any client a detached one (which has none, once uploaded)."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job.client_id == client_id or job.spec.detach
        return job_id in self.finished and self.finished[job_id].detached

    def installing(self, node_id: str, job_id: str, what: str, done: bool, now: float) -> list[Command]:
        """A node started (or finished) installing the job's environment: the client sees it."""
        job = self.jobs.get(job_id)
        if job is None or node_id not in job.nodes:
            return []
        return [ToClient(job.client_id, JobNotice(job_id, line))
                for line in self.installs.report(job_id, node_id, what, done, now)]

    def tick(self, now: float) -> list[Command]:
        """Tell clients how their environments' installs go; fail jobs that waited
        ``no_nodes_timeout`` in a cluster with no node."""
        cmds: list[Command] = [ToClient(self.jobs[job_id].client_id, JobNotice(job_id, line))
                               for job_id, line in self.installs.tick()]
        for job_id in list(self._by_client.get(ORPHAN, ())):
            job = self.jobs[job_id]
            if job.orphaned_at is not None and now - job.orphaned_at > self.config.resume_timeout:
                why = f"the head restarted and its client did not resume the job within {self.config.resume_timeout:g}s"
                cmds += self._end(job, "canceled", JobError("JobCanceled", why))
        for job_id, ended in list(self.finished.items()):
            if ended.since is None:
                ended.since = now
            elif not ended.detached and now - ended.since > self.config.resume_timeout:
                self._forget(job_id)  # its client never said it holds the end
            elif ended.detached and now - ended.since > self.config.retention:
                if ended.ended.status == "expired":
                    self._forget(job_id)
                else:
                    self._expire(ended, now)
        if self.nodes:
            return cmds
        for job in list(self.jobs.values()):
            if now - job.submitted_at > self.config.no_nodes_timeout:
                msg = f"no node joined the cluster within {self.config.no_nodes_timeout:g}s"
                cmds += self._end(job, "failed", JobError("JobFailed", msg))
        return cmds

    # --- internals: one job ---------------------------------------------------------

    def _settle(self, job: JobState) -> list[Command]:
        """Bring the job touched by an event to rest: feed its nodes (a batch to
        every slot before a second to any, taking a free node before
        prefetching), free the nodes it no longer needs, ask for nodes (its
        fair share, taken from jobs above theirs between calls), grant credit.
        A restored job waits for its client (``resume``)."""
        if job.client_id == ORPHAN and not job.spec.detach:
            return []
        cmds = self._feed(job)
        self._release_idle_nodes(job, cmds)
        wants = self._can_send(job) and not self._capped(job)
        self.placement.set_wanting(job, wants)
        if wants:
            for donor, node in self.placement.drain_for(job):
                cmds += self._release(donor, node)
        return cmds + self._grant_credit(job)

    def _feed(self, job: JobState) -> list[Command]:
        cmds: list[Command] = []
        while self._can_send(job):
            # Half of each node's slots, then another node, then the rest of the
            # slots (a job spreads before it packs), then a node of its tree as a
            # guest, then a second batch per slot.
            node_id = next(iter(job.open_half), None)
            if node_id is None:
                node = self._take_free(job, cmds)
                node_id = node.node_id if node else next(iter(job.open1), None)
            if node_id is None:
                node = self._take_guest(job, cmds)
                node_id = node.node_id if node else self._prefetch_node(job)
                if node_id is None:
                    break
            self._send(job, self.nodes[node_id], cmds)
        return cmds

    def _prefetch_node(self, job: JobState) -> str | None:
        """A node of the job whose every slot is busy, to queue a second batch on."""
        return next(iter(job.open2), None) if _flow.prefetches(self.config, job) else None

    def _can_send(self, job: JobState) -> bool:
        return _flow.can_send(self.config, job, self.queue.length(job.job_id))

    def _send(self, job: JobState, node: NodeState, cmds: list[Command]) -> None:
        batch = self.queue.pop(job.job_id)
        assert batch is not None
        job.inflight[batch.start] = (node.node_id, batch)
        node.inflight.add((job.job_id, batch.start))
        job.held[node.node_id] += 1
        cmds.append(ToNode(node.node_id, batch))
        self.placement.track(job, node)

    @staticmethod
    def _unhold(job: JobState, node: NodeState, start: int) -> AnyInputBatch:
        """The batch at ``start`` is no longer in flight on ``node`` (``_send``'s undo)."""
        node.inflight.discard((job.job_id, start))
        job.held[node.node_id] -= 1
        return job.inflight.pop(start)[1]

    def _node_changed(self, job: JobState, node: NodeState) -> list[Command]:
        """A batch left ``node``: a draining node that is now idle changes hands."""
        if node.draining and node.job_id == job.job_id and not job.held[node.node_id]:
            return self._release(job, node)
        self.placement.track(job, node)
        return []

    @staticmethod
    def _slots_left(job: JobState) -> int | None:
        """Worker slots the job may still take under max_parallelism (None: no cap)."""
        return job.spec.max_parallelism - job.workers if job.spec.max_parallelism else None

    def _capped(self, job: JobState) -> bool:
        left = self._slots_left(job)
        return left is not None and left <= 0

    def _release_idle_nodes(self, job: JobState, cmds: list[Command]) -> None:
        """Free nodes a job will never need again, so other jobs can use them."""
        if job.total is None or self.queue.length(job.job_id) or job.received < job.total:
            return
        for node_id in list(job.empty):
            cmds += self._release(job, self.nodes[node_id])

    def _grant_credit(self, job: JobState) -> list[Command]:
        room = _flow.credit_room(self.config, job, self.queue.length(job.job_id))
        if not room:
            return []
        job.credit_out += room
        return [ToClient(job.client_id, InputCredit(job.job_id, room))]

    def _end(self, job: JobState, status: str, error: JobError | None) -> list[Command]:
        del self.jobs[job.job_id]
        ended = JobEnded(job.job_id, status, error)
        self.facts.append(JobFinished(ended))
        total = -1 if job.total is None else job.total
        if job.spec.detach:  # its results wait for a reader, ``retention`` s
            self.finished[job.job_id] = FinishedJob(ended, job.reader or ORPHAN, job.acked, job.resend,
                                                    detached=True, total=total, delivered=job.delivered)
            if job.reader is not None:
                self._readers.get(job.reader, set()).discard(job.job_id)
        elif self.durable and job.client_id != ORPHAN:
            self.finished[job.job_id] = FinishedJob(ended, job.client_id, total=total, delivered=job.delivered)
        else:
            self.facts.append(JobForgotten(job.job_id))
        self._by_client[job.client_id].pop(job.job_id, None)
        if not self._by_client[job.client_id]:
            del self._by_client[job.client_id]
        self.queue.delete(job.job_id)
        self.placement.forget(job)
        self.installs.forget(job.job_id)
        cmds: list[Command] = []
        for node_id in list(job.nodes):
            cmds += self._release(job, self.nodes[node_id])
        cmds.append(ToClient(job.client_id, ended))
        if job.spec.detach and job.reader is not None and job.reader != job.client_id:
            cmds.append(ToClient(job.reader, ended))
        return self._finish(cmds)

    # --- internals: nodes changing hands ---------------------------------------------------

    def _take_free(self, job: JobState, cmds: list[Command]) -> NodeState | None:
        if self._capped(job):
            return None
        node = self.placement.take_free(job)
        if node is not None:
            cmds += self._assign(job, node)
        return node

    def _assign(self, job: JobState, node: NodeState) -> list[Command]:
        n = node.workers_for(job.spec)
        if (left := self._slots_left(job)) is not None:
            n = min(n, left)
        self.placement.attach(job, node, n)
        return [ToNode(node.node_id, self._assign_msg(job, n))]

    def _assign_msg(self, job: JobState, n: int, guest: bool = False) -> AssignJob:
        spec = job.spec
        return AssignJob(job.job_id, spec.function, n, spec.func_timeout, spec.func_ram, spec.func_cpu, spec.func_gpu,
                         spec.image, self.config.prefetch_per_worker, guest, spec.requirements, spec.wheels)

    def _release(self, job: JobState, node: NodeState) -> list[Command]:
        """``job`` (with nothing left to run there) leaves the node (``Placement.leave``)."""
        node.inflight.difference_update([k for k in node.inflight if k[0] == job.job_id])
        self.placement.leave(job, node, self.jobs)
        return [ToNode(node.node_id, ReleaseJob(job.job_id))]

    def _take_guest(self, job: JobState, cmds: list[Command]) -> NodeState | None:
        """A node of the job's tree to run on beside its job (nested calls)."""
        if not job.depth or self._capped(job):
            return None
        node = self.placement.take_guest(job, self._slots_left(job))
        if node is not None:
            cmds.append(ToNode(node.node_id, self._assign_msg(job, job.nodes[node.node_id], guest=True)))
        return node

    def _finish(self, cmds: list[Command]) -> list[Command]:
        """Place every node that left a job or joined (``Placement``), and guest
        slots freed in a tree with the nested jobs of that tree still waiting."""
        while (placed := self.placement.next_placement()) is not None:
            node, job = placed
            cmds += self._assign(job, node)
            cmds += self._settle(job)
        while self.placement.guest_room_freed:
            root = self.placement.guest_room_freed.pop()
            for job in [j for j in self.placement.wanting.values() if j.root == root and j.depth]:
                cmds += self._settle(job)
        return cmds

def _size(batch: AnyInputBatch) -> int:
    """Payload bytes of a batch, for the job's byte budget."""
    return len(batch.payload)
