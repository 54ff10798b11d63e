"""The head's scheduling core: typed events in, typed commands out, no I/O.

``HeadState`` owns the node registry and every job.  The networking layer
(``_head.Head``) turns each received message or disconnect into one method
call and sends the returned ``ToNode`` / ``ToClient`` commands.

Invariants (checked by tests/scheduler/test_state.py):

* A node serves at most one job at a time (nodes are single-tenant).
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
"""

from __future__ import annotations

from collections import Counter

from ..transport.messages import (
    INITIAL_INPUT_CREDIT,
    AnyInputBatch,
    AnyResultBatch,
    AssignJob,
    InputCredit,
    JobAccepted,
    JobEnded,
    JobError,
    JobNotice,
    LogAck,
    LogBatch,
    ReleaseJob,
    RestartNode,
    SubmitJob,
)
from ._batches import crash_message, remaining, split_around
from ._queue import InProcessQueue, QueueBackend
from ._records import Command, HeadConfig, JobState, NodeState, ToClient, ToNode

__all__ = ["Command", "HeadConfig", "HeadState", "JobState", "NodeState", "ToClient", "ToNode"]


class HeadState:
    def __init__(self, config: HeadConfig = HeadConfig(), queue: QueueBackend | None = None):
        self.config = config
        self.queue: QueueBackend = queue if queue is not None else InProcessQueue()
        self.nodes: dict[str, NodeState] = {}
        self.jobs: dict[str, JobState] = {}  # insertion order = FIFO priority

    # --- events: nodes ----------------------------------------------------------

    def node_joined(self, node: NodeState) -> list[Command]:
        self.nodes[node.node_id] = node
        return self._settle()

    def node_left(self, node_id: str) -> list[Command]:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return []
        cmds: list[Command] = []
        job = self.jobs.get(node.job_id) if node.job_id else None
        if job is not None:
            held = len(node.inflight)
            text = f"node {node_id} was lost; its {held} input batch(es) will run on other nodes"
            cmds.append(ToClient(job.client_id, JobNotice(job.job_id, text)))
        self._take_back(node)
        return cmds + self._settle()

    def restart_node(self, node_id: str) -> list[Command]:
        """Replace a node's workers; work it held goes back to the queue."""
        node = self.nodes.get(node_id)
        if node is None:
            return []
        job_id = node.job_id
        self._take_back(node)
        cmds: list[Command] = [ToNode(node_id, ReleaseJob(job_id))] if job_id else []
        return [*cmds, ToNode(node_id, RestartNode()), *self._settle()]

    def _take_back(self, node: NodeState) -> None:
        """Detach a node from its job, requeueing (uncharged) what it held."""
        job = self.jobs.get(node.job_id) if node.job_id else None
        if job is not None:
            job.workers -= job.nodes.pop(node.node_id, 0)
            for key in sorted(node.inflight, reverse=True):
                _, batch = job.inflight.pop(key[1])
                rest = remaining(batch, job.progress.pop(key[1], 0))
                job.held_bytes += _size(rest) - _size(batch)
                self.queue.push_front(job.job_id, rest)
        node.job_id, node.workers_for_job = None, 0
        node.inflight.clear()

    def batch_lost(self, node_id: str, job_id: str, start: int, crashed_index: int, reason: str) -> list[Command]:
        """A worker died holding this batch; ``crashed_index`` is the input it
        was running (-1: none), every other input of the batch is requeued."""
        job = self.jobs.get(job_id)
        node = self.nodes.get(node_id)
        if job is None or node is None or (job_id, start) not in node.inflight:
            return []
        node.inflight.discard((job_id, start))
        _, batch = job.inflight.pop(start)
        job.held_bytes -= _size(batch)
        batch = remaining(batch, job.progress.pop(start, 0))
        parts = split_around(batch, crashed_index)
        for part in reversed(parts):
            if part.start == crashed_index:
                part.attempt += 1
                if part.attempt > job.spec.max_retries:
                    why = crash_message(crashed_index, part.attempt, reason)
                    error = JobError("WorkerCrashed", why, crashed_index)
                    return self._end(job, "failed", error)
            job.held_bytes += _size(part)
            self.queue.push_front(job_id, part)
        return self._settle()

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
        if done + len(rb.ends) == size:
            node.inflight.discard((rb.job_id, start))
            job.held_bytes -= _size(job.inflight.pop(start)[1])
            job.progress.pop(start, None)
        else:
            job.progress[start] = done + len(rb.ends)
        job.unacked += 1
        job.delivered += len(rb.ends)
        cmds: list[Command] = [ToClient(job.client_id, rb)]
        if job.total is not None and job.delivered >= job.total:
            return cmds + self._end(job, "done", None)
        return cmds + self._settle()

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
        if job is None or node is None or node.job_id != job.job_id:
            return []  # the job ended or left that node: its worker is being reset or killed
        job.log_sources.append(node_id)
        return [ToClient(job.client_id, logs)]

    # --- events: clients ----------------------------------------------------------

    def submit(self, client_id: str, spec: SubmitJob, now: float) -> list[Command]:
        if spec.job_id in self.jobs:
            return []
        job = JobState(spec, client_id, now)
        self.jobs[spec.job_id] = job
        self.queue.create(spec.job_id)
        if self.nodes and not any(n.workers_for(spec) for n in self.nodes.values()):
            return self._end(job, "failed", JobError("NoCompatibleNodes", self._incompatible(spec)))
        cmds = self._settle()
        cmds.insert(0, ToClient(client_id, JobAccepted(spec.job_id, job.workers, INITIAL_INPUT_CREDIT)))
        return cmds

    def input_batch(self, client_id: str, batch: AnyInputBatch) -> list[Command]:
        job = self.jobs.get(batch.job_id)
        if job is None or job.client_id != client_id:
            return []  # canceled or finished meanwhile
        if job.credit_out <= 0:
            return self._end(job, "failed", JobError("JobFailed", "client sent inputs without credit"))
        job.credit_out -= 1
        job.received += len(batch.ends)
        job.held_bytes += _size(batch)
        job.max_batch_bytes = max(job.max_batch_bytes, _size(batch))
        self.queue.push(job.job_id, batch)
        return self._settle()

    def inputs_done(self, client_id: str, job_id: str, total: int) -> list[Command]:
        job = self.jobs.get(job_id)
        if job is None or job.client_id != client_id:
            return []
        job.total = total
        if job.delivered >= total:
            return self._end(job, "done", None)
        return self._settle()

    def result_ack(self, client_id: str, job_id: str, batches: int) -> list[Command]:
        job = self.jobs.get(job_id)
        if job is None or job.client_id != client_id:
            return []
        job.unacked = max(0, job.unacked - batches)
        return self._settle()

    def log_ack(self, client_id: str, job_id: str, batches: int) -> list[Command]:
        """The client printed its oldest ``batches`` log batches: the credit goes
        back to the nodes that sent them (still serving the job)."""
        job = self.jobs.get(job_id)
        if job is None or job.client_id != client_id:
            return []
        counts = Counter(job.log_sources.popleft() for _ in range(min(batches, len(job.log_sources))))
        return [ToNode(node_id, LogAck(job_id, n)) for node_id, n in counts.items()
                if node_id in job.nodes]

    def cancel(self, job_id: str, reason: str) -> list[Command]:
        job = self.jobs.get(job_id)
        if job is None:
            return []
        return self._end(job, "canceled", JobError("JobCanceled", reason))

    def client_left(self, client_id: str) -> list[Command]:
        """Cancel the client's jobs (the JobEnded it is sent goes nowhere)."""
        cmds: list[Command] = []
        for job in [j for j in self.jobs.values() if j.client_id == client_id]:
            cmds += self._end(job, "canceled", JobError("JobCanceled", "client disconnected"))
        return cmds

    def tick(self, now: float) -> list[Command]:
        """Fail jobs that waited ``no_nodes_timeout`` in a cluster with no node."""
        if self.nodes:
            return []
        cmds: list[Command] = []
        for job in list(self.jobs.values()):
            if now - job.submitted_at > self.config.no_nodes_timeout:
                msg = f"no node joined the cluster within {self.config.no_nodes_timeout:g}s"
                cmds += self._end(job, "failed", JobError("JobFailed", msg))
        return cmds

    # --- internals ---------------------------------------------------------------

    def _wants_nodes(self, job: JobState) -> bool:
        """A job takes another node only when it has queued inputs its nodes
        cannot hold and room in its result window to send them (issue 10): a
        10-input job leaves the rest of a big cluster to other jobs."""
        if job.spec.max_parallelism and job.workers >= job.spec.max_parallelism:
            return False
        if len(job.inflight) + job.unacked >= self._window(job):
            return False
        return self.queue.length(job.job_id) > 0

    def _settle(self) -> list[Command]:
        """Bring every job to rest after an event: give each of its slots one
        batch, free the nodes it no longer needs, hand free nodes to jobs that
        still have queued batches, and only then prefetch a second batch per
        slot -- so no slot is idle while another holds two (issue 10)."""
        cmds: list[Command] = []
        for job in self.jobs.values():
            cmds += self._dispatch(job, depth=1)
            cmds += self._release_idle_nodes(job)
        for job in self.jobs.values():
            self._assign_free_nodes(job, cmds)
        for job in self.jobs.values():
            cmds += self._dispatch(job, depth=self.config.prefetch_per_worker)
            cmds += self._grant_credit(job)
        return cmds

    def _assign_free_nodes(self, job: JobState, cmds: list[Command]) -> bool:
        assigned = False
        for node in self.nodes.values():
            if not self._wants_nodes(job):
                break
            if node.job_id is not None:
                continue
            n = node.workers_for(job.spec)
            if job.spec.max_parallelism:
                n = min(n, job.spec.max_parallelism - job.workers)
            if n <= 0:
                continue
            node.job_id, node.workers_for_job = job.job_id, n
            job.nodes[node.node_id] = n
            job.workers += n
            spec = job.spec
            cmds.append(ToNode(node.node_id, AssignJob(job.job_id, spec.function, n, spec.func_timeout, spec.func_ram,
                                                       spec.func_cpu, spec.func_gpu, spec.image,
                                                       self.config.prefetch_per_worker)))
            cmds += self._fill(job, node, depth=1)  # what it takes is no longer queued for the next node
            assigned = True
        return assigned

    def _fill(self, job: JobState, node: NodeState, depth: int) -> list[Command]:
        """Send the node queued batches up to ``depth`` per worker, within the result window."""
        cmds: list[Command] = []
        capacity = node.workers_for_job * depth
        window = self._window(job)
        while len(node.inflight) < capacity and len(job.inflight) + job.unacked < window:
            batch = self.queue.pop(job.job_id)
            if batch is None:
                break
            job.inflight[batch.start] = (node.node_id, batch)
            node.inflight.add((job.job_id, batch.start))
            cmds.append(ToNode(node.node_id, batch))
        return cmds

    def _dispatch(self, job: JobState, depth: int) -> list[Command]:
        cmds: list[Command] = []
        for node_id in job.nodes:
            cmds += self._fill(job, self.nodes[node_id], depth)
        return cmds

    def _grant_credit(self, job: JobState) -> list[Command]:
        """Let the client send more: up to a queue that grows with the job's
        slots, and within its byte budget (estimated from the largest batch
        seen; none is granted before the first batch shows its size)."""
        cfg = self.config
        if job.total is not None or not job.max_batch_bytes:
            return []
        queue_cap = max(cfg.input_queue_batches, cfg.prefetch_per_worker * job.workers)
        by_count = queue_cap - self.queue.length(job.job_id) - job.credit_out
        by_bytes = (cfg.job_bytes - job.held_bytes) // job.max_batch_bytes - job.credit_out
        room = min(by_count, by_bytes)
        if room <= 0:
            return []
        job.credit_out += room
        return [ToClient(job.client_id, InputCredit(job.job_id, room))]

    def _release_idle_nodes(self, job: JobState) -> list[Command]:
        """Free nodes a job no longer needs, so other jobs can use them."""
        if job.total is None or self.queue.length(job.job_id) or job.received < job.total:
            return []
        cmds: list[Command] = []
        for node_id in list(job.nodes):
            if not self.nodes[node_id].inflight:
                cmds += self._release(job, node_id)
        return cmds

    def _window(self, job: JobState) -> int:
        """Result batches the job may have in flight or unacknowledged: grows with its slots."""
        return self.config.result_window + 2 * self.config.prefetch_per_worker * job.workers

    def _release(self, job: JobState, node_id: str) -> list[Command]:
        job.workers -= job.nodes.pop(node_id)
        node = self.nodes[node_id]
        node.job_id, node.workers_for_job = None, 0
        node.inflight.clear()
        return [ToNode(node_id, ReleaseJob(job.job_id))]

    def _end(self, job: JobState, status: str, error: JobError | None) -> list[Command]:
        cmds: list[Command] = []
        for node_id in list(job.nodes):
            cmds += self._release(job, node_id)
        del self.jobs[job.job_id]
        self.queue.delete(job.job_id)
        cmds.append(ToClient(job.client_id, JobEnded(job.job_id, status, error)))
        return cmds + self._settle()

    def _incompatible(self, spec: SubmitJob) -> str:
        if spec.image and not any(n.runtime == "container" for n in self.nodes.values()):
            return (f"image={spec.image!r} needs nodes that run workers in containers (a cluster started with "
                    "provider: {type: docker}); this cluster's nodes run workers as processes")
        if spec.func_gpu and not any(n.gpus for n in self.nodes.values()):
            return f"func_gpu={spec.func_gpu}: no node in this cluster has a GPU"
        biggest = max(self.nodes.values(), key=lambda n: (n.cpus, n.ram_bytes))
        want = f"func_cpu={spec.func_cpu}" + (f", func_ram={spec.func_ram / 2**30:.1f} GiB" if spec.func_ram else "")
        return (
            f"no node can run one call with {want}: the largest node has {biggest.cpus} CPUs and "
            f"{biggest.ram_bytes / 2**30:.1f} GiB RAM; lower func_cpu/func_ram or add bigger nodes"
        )


def _size(batch: AnyInputBatch) -> int:
    """Payload bytes of a batch, for the job's byte budget."""
    return len(batch.payload)
