"""The head's node registry, indexed so that scheduling never walks it.

Nodes are grouped by *shape* (runtime, CPUs, RAM, GPUs, worker slots): the
only things ``NodeState.workers_for`` looks at.  A cluster has few shapes
however many nodes it has, so "is any node able to run this job?" and "a free
node that fits this job" cost O(shapes), not O(nodes) (issue 10).
"""

from __future__ import annotations

from collections import Counter

from ..transport.messages import SubmitJob
from ._records import NodeState, Shape


class NodePool:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.slots = 0  # worker slots of all nodes
        self._shapes: Counter[Shape] = Counter()
        self._free: dict[Shape, dict[str, NodeState]] = {}  # nodes serving no job, oldest first

    def __len__(self) -> int:
        return len(self.nodes)

    def add(self, node: NodeState) -> None:
        self.nodes[node.node_id] = node
        self.slots += node.n_workers
        self._shapes[node.shape] += 1

    def remove(self, node_id: str) -> NodeState | None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return None
        self.slots -= node.n_workers
        self._shapes[node.shape] -= 1
        if not self._shapes[node.shape]:
            del self._shapes[node.shape]
        self._free.get(node.shape, {}).pop(node_id, None)
        return node

    def put_free(self, node: NodeState) -> None:
        self._free.setdefault(node.shape, {})[node.node_id] = node

    def take_free(self, spec: SubmitJob) -> NodeState | None:
        """A free node that can run at least one call of ``spec`` (now no longer free)."""
        for free in self._free.values():
            if free:
                first = next(iter(free.values()))
                if first.workers_for(spec) > 0:
                    return free.pop(first.node_id)
        return None

    def any_fits(self, spec: SubmitJob) -> bool:
        return any(_example(shape).workers_for(spec) > 0 for shape in self._shapes)

    def largest(self) -> NodeState:
        return _example(max(self._shapes, key=lambda s: (s.cpus, s.ram_bytes)))

    def has_runtime(self, runtime: str) -> bool:
        return any(s.runtime == runtime for s in self._shapes)

    def has_gpus(self) -> bool:
        return any(s.gpus for s in self._shapes)

    def incompatible(self, spec: SubmitJob) -> str:
        """Why no node can run ``spec`` (for NoCompatibleNodes)."""
        if spec.image and not self.has_runtime("container"):
            return (f"image={spec.image!r} needs nodes that run workers in containers (a cluster started with "
                    "provider: {type: docker}); this cluster's nodes run workers as processes")
        if spec.func_gpu and not self.has_gpus():
            return f"func_gpu={spec.func_gpu}: no node in this cluster has a GPU"
        biggest = self.largest()
        want = f"func_cpu={spec.func_cpu}" + (f", func_ram={spec.func_ram / 2**30:.1f} GiB" if spec.func_ram else "")
        return (
            f"no node can run one call with {want}: the largest node has {biggest.cpus} CPUs and "
            f"{biggest.ram_bytes / 2**30:.1f} GiB RAM; lower func_cpu/func_ram or add bigger nodes"
        )


def _example(shape: Shape) -> NodeState:
    return NodeState("", "", shape.cpus, shape.ram_bytes, shape.n_workers, shape.runtime, shape.gpus)
