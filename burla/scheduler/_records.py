"""What the head's scheduling core keeps and says: its configuration, its
record of each node and job, and the commands it returns (``_state``)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ..transport.messages import INITIAL_INPUT_CREDIT, AnyInputBatch, AnyResultBatch, JobEnded, Outgoing, SubmitJob


@dataclass(frozen=True)
class HeadConfig:
    """input_queue_batches: input batches one job may have waiting in the head,
                          at least; a job with more slots may queue
                          prefetch_per_worker per slot (issue 10).
    result_window:        batches one job may have in flight on nodes plus
                          delivered to its client but not yet acknowledged,
                          plus 2 x prefetch_per_worker per slot the job holds:
                          the window grows with the job, so every slot of a
                          big cluster can be busy.
    job_bytes:            input bytes one job may have in the head (queued or
                          in flight on nodes): the bound on head memory per
                          job, the same for 2 slots or 10,000.  Past it the
                          client gets no more credit until results come back.
    prefetch_per_worker:  batches a node may hold per worker (one running,
                          the rest prefetched).
    prefetch_below:       seconds: a job's batches are prefetched only while
                          one takes less than this to run (measured from its
                          results).  Slower ones go one per slot: prefetching
                          them gains nothing and would keep inputs queued
                          behind a busy worker, and a node being handed to
                          another job waits for one call, not two.
    no_nodes_timeout:     seconds a job waits for any node to join an empty
                          cluster before failing.
    resume_timeout:       seconds a job restored by a restarted head (durable
                          queue backend) waits for its client to resume it
                          before it is canceled.
    detached_bytes:       result bytes a detached job may hold for a client
                          to take; past it the job pauses until one does.
    retention:            seconds a detached job's results wait after it
                          ended; then they are dropped and it says "expired"
                          (kept as such as long again).
    """

    input_queue_batches: int = 32
    result_window: int = 64
    prefetch_per_worker: int = 2
    no_nodes_timeout: float = 60.0
    job_bytes: int = 256 << 20
    prefetch_below: float = 0.1
    resume_timeout: float = 60.0
    detached_bytes: int = 256 << 20
    retention: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if self.input_queue_batches < INITIAL_INPUT_CREDIT:
            raise ValueError(f"input_queue_batches must be >= {INITIAL_INPUT_CREDIT}")
        if self.result_window < 1 or self.prefetch_per_worker < 1:
            raise ValueError("result_window and prefetch_per_worker must be >= 1")


@dataclass
class ToNode:
    node_id: str
    msg: Outgoing


@dataclass
class ToClient:
    client_id: str
    msg: Outgoing


Command = ToNode | ToClient


class Shape(NamedTuple):
    """What decides how many calls of a job a node can run (``NodeState.workers_for``)."""

    runtime: str
    cpus: int
    ram_bytes: int
    gpus: int
    n_workers: int


@dataclass
class NodeState:
    node_id: str
    host: str
    cpus: int
    ram_bytes: int
    n_workers: int
    runtime: str = "process"
    gpus: int = 0
    environments: bool = False  # installs a job's requirements before its first call
    job_id: str | None = None
    workers_for_job: int = 0
    inflight: set[tuple[str, int]] = field(default_factory=set)  # (job, batch start) of every job here
    draining: bool = False  # its job sends it nothing more: it goes to another job once idle
    # Jobs of its job's tree (nested calls) it also serves, on workers of their own: job -> slots,
    # and the slots they use per nesting depth (each depth may add n_workers).
    guests: dict[str, int] = field(default_factory=dict)
    guest_slots: Counter[int] = field(default_factory=Counter)

    @property
    def shape(self) -> Shape:
        return Shape(self.runtime, self.cpus, self.ram_bytes, self.gpus, self.n_workers)

    def workers_for(self, spec: SubmitJob) -> int:
        if spec.image and self.runtime != "container":
            return 0
        # Every worker slot the node was started with is a concurrent call (workers_per_node
        # set above the CPUs is how I/O-bound work asks for more); func_cpu=k > 1 still keeps
        # a job to cpus // k calls on the node (issue 10).
        n = self.n_workers if spec.func_cpu <= 1 else min(self.n_workers, self.cpus // spec.func_cpu)
        if spec.func_ram:
            n = min(n, self.ram_bytes // spec.func_ram)
        if spec.func_gpu:
            n = min(n, self.gpus // spec.func_gpu)
        return max(n, 0)


@dataclass
class FinishedJob:
    """A job that ended on a durable head, kept (with its results, in the backend) until its
    client says it holds the end (JobEndedAck), leaves, or ``resume_timeout`` passes: a head
    restarted before then sends the results it lacks again, then the end."""

    ended: JobEnded
    client_id: str  # detached: its reader, if one is attached
    acked: int = 0  # result batches the client acknowledged ...
    resend: list[AnyResultBatch] = field(default_factory=list)  # ... and the stored ones after those
    since: float | None = None  # when it ended (first tick after) or was restored
    detached: bool = False  # kept ``retention`` s until every result is taken (acknowledged)
    end_held: bool = False  # detached: its reader has the end (JobEndedAck)
    total: int = -1  # detached, for JobInfo
    delivered: int = 0


@dataclass
class JobState:
    spec: SubmitJob
    client_id: str
    submitted_at: float
    credit_out: int = INITIAL_INPUT_CREDIT
    inflight: dict[int, tuple[str, AnyInputBatch]] = field(default_factory=dict)
    unacked: int = 0
    acked: int = 0  # result batches the client acknowledged, all told
    received: int = 0  # inputs received from the client
    delivered: int = 0  # inputs whose results went to the client
    total: int | None = None
    nodes: dict[str, int] = field(default_factory=dict)  # node -> workers
    log_sources: deque[str] = field(default_factory=deque)  # node of each log batch sent to the client
    progress: dict[int, int] = field(default_factory=dict)  # batch start -> inputs already delivered
    workers: int = 0  # worker slots on its nodes: sum(nodes.values()), kept as nodes come and go
    held_bytes: int = 0  # input payload bytes queued here or in flight on nodes
    max_batch_bytes: int = 0  # the largest input batch seen (credit is granted in its units)
    batches_in: int = 0  # input batches received from the client
    call_seconds: float = 0.0  # a moving average of the duration of one call, from its results
    # Its nodes by how much they can take, so no event walks them all (issue 10):
    open_half: dict[str, None] = field(default_factory=dict)  # under half its slots hold a batch
    open1: dict[str, None] = field(default_factory=dict)  # a slot holds no batch
    open2: dict[str, None] = field(default_factory=dict)  # every slot has one, room for prefetch
    empty: dict[str, None] = field(default_factory=dict)  # holds no batch at all
    draining: dict[str, None] = field(default_factory=dict)  # being handed to another job
    balanced_at: int = -1  # the head's placement epoch when it last looked for nodes to take
    held: Counter[str] = field(default_factory=Counter)  # node -> its batches in flight there
    # Nested calls: the job tree this job belongs to (its root job) and how deep in it.  A job
    # below the root may also run as a guest on nodes its tree holds (``guest_on``), so a
    # parent holding every node while its calls wait on their children cannot deadlock.
    root: str = ""
    depth: int = 0
    guest_on: dict[str, None] = field(default_factory=dict)
    guest_at: int = -1  # the placement epoch when it last looked for a node of its tree
    # Restored from the queue backend by a new head, until its client resumes it (ResumeJob):
    resend: list[AnyResultBatch] = field(default_factory=list)  # results stored, not acknowledged
    orphaned_at: float | None = None  # when it was restored; None once its client is back
    # Detached (spec.detach): results wait in ``resend`` until a client attached as its reader
    # takes them (acknowledges); ``client_id`` is the uploader (ORPHAN once it left).
    reader: str | None = None
    resend_bytes: int = 0

    @property
    def owned(self) -> int:
        """Nodes the job holds as their one job (not as a guest)."""
        return len(self.nodes) - len(self.guest_on)

    @property
    def job_id(self) -> str:
        return self.spec.job_id
