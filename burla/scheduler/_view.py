"""What the head's HTTP layer may see of the head, and the two things it may do.

``_http`` is given a ``HeadView`` and nothing else: it never reaches into
``Head`` or ``HeadState``, so the head and its HTTP side do not import each
other, and the API cannot change scheduling except through ``cancel_job`` and
``restart_node``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from ..transport.messages import JobInfo, NodeStats
from ._monitor import Monitor
from ._state import HeadState


@dataclass
class NodeInfo:
    """What the head's I/O layer knows of a connected node beyond ``HeadState``."""

    address: str
    provider: str
    joined_at: float
    last_seen: float
    stats: NodeStats | None = None


class HeadView(Protocol):
    @property
    def monitor(self) -> Monitor: ...
    def cluster_summary(self) -> dict[str, Any]: ...
    def cancel_job(self, job_id: str, reason: str) -> bool: ...
    def job_info(self, job_id: str) -> JobInfo: ...
    def restart_node(self, node_id: str) -> bool: ...


def cluster_summary(name: str, started_at: float, state: HeadState, nodes: dict[str, NodeInfo],
                    queue: str = "memory") -> dict[str, Any]:
    """The cluster as ``GET /v1/cluster`` shows it."""
    now = time.time()
    out = []
    for n in state.nodes.values():
        info = nodes.get(n.node_id)
        stats = info.stats if info else None
        out.append({
            "node_id": n.node_id, "host": n.host, "provider": info.provider if info else "local",
            "address": info.address if info else None, "state": "busy" if n.job_id else "idle", "cpus": n.cpus,
            "ram_bytes": n.ram_bytes, "workers": n.n_workers, "job_id": n.job_id,
            "last_heartbeat_s": round(now - info.last_seen, 2) if info else None,
            "cpu_percent": stats.cpu_percent if stats else None,
            "ram_used": stats.ram_used if stats else None,
        })
    return {
        "name": name, "status": "up", "uptime_s": round(now - started_at, 1), "nodes": out,
        "workers": state.pool.slots,
        "cpus": sum(n.cpus for n in state.nodes.values()), "jobs_running": len(state.jobs), "queue": queue,
    }
