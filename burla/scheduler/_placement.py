"""Which job holds which node: the head's placement and fair sharing, O(1) per event.

Every structure here is indexed so that no event walks the nodes or the jobs
(issue 10):

* ``NodePool`` keeps free nodes by shape; a job's nodes are filed by what
  they can take (``JobState.open1`` / ``open2`` / ``empty``), so a batch finds
  its node in O(1).
* ``wanting`` holds the jobs with queued batches their nodes cannot take, in
  turn.  A node that joins or leaves a job goes to the wanting job furthest
  below its fair share (``share``: nodes / jobs that hold or want nodes),
  else to the one whose turn it is, else it waits free.
* A job below its share with no free node to take marks nodes of jobs above
  theirs as *draining*: they are sent nothing more and change hands once the
  calls they hold are done -- never in the middle of one.  This is looked at
  again only after a node changed hands (``epoch``), so a cluster in balance
  costs nothing per event.
"""

from __future__ import annotations

from collections import deque

from ._pool import NodePool
from ._records import JobState, NodeState


class Placement:
    def __init__(self, prefetch_per_worker: int) -> None:
        self.prefetch = prefetch_per_worker
        self.pool = NodePool()
        self.wanting: dict[str, JobState] = {}  # jobs that want more nodes, in turn
        self.holding: dict[str, JobState] = {}  # jobs that hold a node
        self.starved: dict[str, None] = {}  # wanting jobs that hold none
        self.freed: deque[NodeState] = deque()  # nodes that left a job or joined, to be placed
        self.draining = 0  # nodes on their way from one job to another
        self.epoch = 0  # bumps whenever a node joins, leaves or changes hands

    def share(self) -> int:
        """Nodes each job that holds or wants nodes may count on."""
        return max(1, len(self.pool) // max(1, len(self.holding) + len(self.starved)))

    def set_wanting(self, job: JobState, wants: bool) -> None:
        if wants:
            self.wanting.setdefault(job.job_id, job)
            if not job.nodes:
                self.starved[job.job_id] = None
        else:
            self.wanting.pop(job.job_id, None)
            self.starved.pop(job.job_id, None)

    def track(self, job: JobState, node: NodeState) -> None:
        """File the node under what it can take (at the end: the job's nodes take turns)."""
        node_id = node.node_id
        job.open1.pop(node_id, None)
        job.open2.pop(node_id, None)
        job.empty.pop(node_id, None)
        if node.draining:
            return
        held = len(node.inflight)
        if not held:
            job.empty[node_id] = None
        if held < node.workers_for_job:
            job.open1[node_id] = None
        elif held < node.workers_for_job * self.prefetch:
            job.open2[node_id] = None

    def take_free(self, job: JobState) -> NodeState | None:
        """A node nobody wanted, for ``job`` (none while a job that holds no node waits)."""
        if self.starved and job.job_id not in self.starved and job.nodes:
            return None
        return self.pool.take_free(job.spec)

    def attach(self, job: JobState, node: NodeState, workers: int) -> None:
        node.job_id, node.workers_for_job = job.job_id, workers
        job.nodes[node.node_id] = workers
        job.workers += workers
        self.holding[job.job_id] = job
        self.starved.pop(job.job_id, None)
        self.epoch += 1
        self.track(job, node)

    def detach(self, job: JobState, node: NodeState) -> None:
        node_id = node.node_id
        job.workers -= job.nodes.pop(node_id, 0)
        for index in (job.open1, job.open2, job.empty, job.draining):
            index.pop(node_id, None)
        if node.draining:
            self.draining -= 1
        if not job.nodes:
            self.holding.pop(job.job_id, None)
        node.job_id, node.workers_for_job, node.draining = None, 0, False
        self.epoch += 1

    def forget(self, job: JobState) -> None:
        """The job ended (its nodes are detached by the caller)."""
        self.wanting.pop(job.job_id, None)
        self.starved.pop(job.job_id, None)

    def next_placement(self) -> tuple[NodeState, JobState] | None:
        """The next freed node and the job it goes to; nodes nobody wants wait free."""
        while self.freed:
            node = self.freed.popleft()
            if node.node_id not in self.pool.nodes or node.job_id is not None:
                continue
            job = self._pick(node)
            if job is None:
                self.pool.put_free(node)
                continue
            del self.wanting[job.job_id]  # it takes its turn: the others go first next time
            return node, job
        return None

    def _pick(self, node: NodeState) -> JobState | None:
        share = self.share()
        fallback = None
        for job in self.wanting.values():
            if node.workers_for(job.spec) <= 0:
                continue
            if len(job.nodes) < share:
                return job
            fallback = fallback or job
        return fallback

    def drain_for(self, job: JobState) -> list[tuple[JobState, NodeState]]:
        """Mark nodes of jobs above their share as draining until ``job`` (below
        its share, no free node to take) can reach it.  Returns the ones that
        hold nothing: they change hands now."""
        if job.balanced_at == self.epoch or len(job.nodes) >= self.share():
            return []
        job.balanced_at = self.epoch
        share = self.share()
        need = share - len(job.nodes) - self.draining
        idle: list[tuple[JobState, NodeState]] = []
        for donor in sorted(self.holding.values(), key=lambda d: len(d.draining) - len(d.nodes)):
            excess = len(donor.nodes) - len(donor.draining) - share
            if need <= 0 or excess <= 0:
                break
            for node_id in [*donor.empty, *donor.open1, *donor.nodes]:  # the least busy first
                node = self.pool.nodes[node_id]
                if node.draining or node.workers_for(job.spec) <= 0:
                    continue
                node.draining = True
                donor.draining[node_id] = None
                self.draining += 1
                self.track(donor, node)  # out of its open sets: it is sent nothing more
                if not node.inflight:
                    idle.append((donor, node))
                excess, need = excess - 1, need - 1
                if need <= 0 or excess <= 0:
                    break
        return idle
