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
* Nested calls: a job submitted by a call of another is in that job's tree.
  When no free node is left it may run as a *guest* on a node its tree holds,
  on workers of its own (each nesting depth may add ``n_workers`` slots to a
  node), so a parent whose calls wait on their children cannot starve them.
  When a node's job leaves it, its oldest guest inherits the node: it stays
  with the tree until the tree's calls there are done.
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
        self.tree_nodes: dict[str, dict[str, None]] = {}  # job tree (root job) -> nodes its jobs own
        self.guest_room_freed: set[str] = set()  # trees where guest slots came free: settle their waiting jobs

    def joined(self, node: NodeState) -> None:
        """A node registered: it is placed at the end of the event (``next_placement``)."""
        self.pool.add(node)
        self.epoch += 1
        self.freed.append(node)

    def left(self, node_id: str) -> NodeState | None:
        """A node is gone (its jobs still to be detached by the caller)."""
        node = self.pool.remove(node_id)
        if node is not None:
            self.epoch += 1
        return node

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
        """File the node under what it can take for ``job`` (at the end: the job's
        nodes take turns)."""
        node_id = node.node_id
        _unfile(job, node_id)
        if node.draining and node.job_id == job.job_id:
            return
        held, slots = job.held[node_id], job.nodes.get(node_id, 0)
        if not held:
            job.empty[node_id] = None
        if 2 * held < slots:
            job.open_half[node_id] = None
        if held < slots:
            job.open1[node_id] = None
        elif held < slots * self.prefetch:
            job.open2[node_id] = None

    def take_free(self, job: JobState) -> NodeState | None:
        """A node nobody wanted, for ``job`` (none while a job that holds no node waits)."""
        if self.starved and job.job_id not in self.starved and job.nodes:
            return None
        return self.pool.take_free(job.spec)

    def attach(self, job: JobState, node: NodeState, workers: int) -> None:
        """``job`` becomes the node's job."""
        node.job_id, node.workers_for_job = job.job_id, workers
        job.nodes[node.node_id] = workers
        job.workers += workers
        self.holding[job.job_id] = job
        self.starved.pop(job.job_id, None)
        self.tree_nodes.setdefault(job.root, {})[node.node_id] = None
        self.epoch += 1
        self.track(job, node)

    def attach_guest(self, job: JobState, node: NodeState, workers: int) -> None:
        node.guests[job.job_id] = workers
        node.guest_slots[job.depth] += workers
        job.guest_on[node.node_id] = None
        job.nodes[node.node_id] = workers
        job.workers += workers
        self.epoch += 1
        self.track(job, node)

    def guest_room(self, job: JobState, node: NodeState) -> int:
        """Slots ``job`` could have as a guest on ``node`` (0: none, or not its tree's)."""
        if node.node_id in job.nodes or node.job_id is None or node.node_id not in self.tree_nodes.get(job.root, {}):
            return 0
        return min(node.n_workers - node.guest_slots[job.depth], node.workers_for(job.spec))

    def detach(self, job: JobState, node: NodeState) -> None:
        """``job`` leaves the node (which is then free, if it was the node's job)."""
        node_id = node.node_id
        job.workers -= job.nodes.pop(node_id, 0)
        job.held.pop(node_id, None)
        _unfile(job, node_id)
        job.draining.pop(node_id, None)
        if node_id in job.guest_on:
            del job.guest_on[node_id]
            node.guest_slots[job.depth] -= node.guests.pop(job.job_id, 0)
        elif node.job_id == job.job_id:
            if node.draining:
                self.draining -= 1
            node.job_id, node.workers_for_job, node.draining = None, 0, False
            tree = self.tree_nodes.get(job.root, {})
            tree.pop(node_id, None)
            if not tree:
                self.tree_nodes.pop(job.root, None)
        if not job.owned:
            self.holding.pop(job.job_id, None)
        self.epoch += 1

    def take_guest(self, job: JobState, cap: int | None) -> NodeState | None:
        """A node of the job's tree with guest room at its depth, now serving it
        (looked for again only after a node changed hands)."""
        if job.guest_at == self.epoch:
            return None
        for node_id in self.tree_nodes.get(job.root, {}):
            node = self.pool.nodes[node_id]
            n = self.guest_room(job, node)
            if cap is not None:
                n = min(n, cap)
            if n > 0:
                self.attach_guest(job, node, n)
                return node
        job.guest_at = self.epoch
        return None

    def leave(self, job: JobState, node: NodeState, jobs: dict[str, JobState]) -> None:
        """``job`` leaves the node: if it was the node's job, the oldest guest of
        its tree inherits the node, else the node is to be placed anew."""
        owner = node.job_id == job.job_id
        self.detach(job, node)
        heir = next((jobs[g] for g in node.guests if g in jobs), None) if owner else None
        if heir is not None:
            self.promote(heir, node)
        elif owner:
            self.freed.append(node)
        else:
            self.guest_room_freed.add(job.root)

    def promote(self, heir: JobState, node: NodeState) -> None:
        """The node's job left; ``heir``, a guest of the same tree, becomes its job."""
        workers = node.guests.pop(heir.job_id)
        node.guest_slots[heir.depth] -= workers
        del heir.guest_on[node.node_id]
        node.job_id, node.workers_for_job = heir.job_id, workers
        self.holding[heir.job_id] = heir
        self.tree_nodes.setdefault(heir.root, {})[node.node_id] = None
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
            if job.owned < share:
                return job
            fallback = fallback or job
        return fallback

    def drain_for(self, job: JobState) -> list[tuple[JobState, NodeState]]:
        """Mark nodes of jobs above their share as draining until ``job`` (below
        its share, no free node to take) can reach it.  Returns the ones that
        hold nothing: they change hands now."""
        share = self.share()
        if job.balanced_at == self.epoch or job.owned >= share:
            return []
        job.balanced_at = self.epoch
        need = share - job.owned - self.draining
        idle: list[tuple[JobState, NodeState]] = []
        for donor in sorted(self.holding.values(), key=lambda d: len(d.draining) - d.owned):
            excess = donor.owned - len(donor.draining) - share
            if need <= 0 or excess <= 0:
                break
            for node_id in [*donor.empty, *donor.open1, *donor.nodes]:  # the least busy first
                node = self.pool.nodes[node_id]
                if node.draining or node.job_id != donor.job_id or node.workers_for(job.spec) <= 0:
                    continue
                node.draining = True
                donor.draining[node_id] = None
                self.draining += 1
                self.track(donor, node)  # out of its open sets: it is sent nothing more
                if not donor.held[node_id]:
                    idle.append((donor, node))
                excess, need = excess - 1, need - 1
                if need <= 0 or excess <= 0:
                    break
        return idle


def _unfile(job: JobState, node_id: str) -> None:
    """Take the node out of the job's indexes of what its nodes can take."""
    for index in (job.open_half, job.open1, job.open2, job.empty):
        index.pop(node_id, None)
