"""What the user sees while nodes install a job's environment (issue 12, item 4).

Nodes report ``Installing(job, what)`` when they start and ``done`` when the
environment is in place.  Each job's reports are folded into one line per
change, at most once per head tick: "installing pandas 2.2.3 on 3 nodes…",
then "installed pandas 2.2.3 on 3 nodes in 41.2s" when the last is done.  A
job whose environment is already in place on every node sends nothing and
shows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _JobInstalls:
    started: float
    busy: dict[str, str] = field(default_factory=dict)  # node -> what it is installing now
    finished: dict[str, str] = field(default_factory=dict)  # node -> what it installed
    shown: tuple[tuple[str, int], ...] = ()  # the line last shown, as (what, nodes) pairs


class Installs:
    def __init__(self) -> None:
        self._jobs: dict[str, _JobInstalls] = {}

    def report(self, job_id: str, node_id: str, what: str, done: bool, now: float) -> list[str]:
        """A node's report; the lines to show now (only once the job's last install is done)."""
        job = self._jobs.setdefault(job_id, _JobInstalls(now))
        if not done:
            job.busy[node_id] = what
            job.finished.pop(node_id, None)
            return []
        if job.busy.pop(node_id, None) is None:
            return []
        job.finished[node_id] = what
        if job.busy:
            return []
        del self._jobs[job_id]
        return [f"installed {_phrase(_count(job.finished))} in {now - job.started:.1f}s"]

    def node_left(self, node_id: str) -> None:
        for job in self._jobs.values():
            job.busy.pop(node_id, None)

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def tick(self) -> list[tuple[str, str]]:
        """(job, line) for every job whose installs changed since its last line."""
        out = []
        for job_id, job in self._jobs.items():
            now = _count(job.busy)
            if now and now != job.shown:
                job.shown = now
                out.append((job_id, f"installing {_phrase(now)}…"))
        return out


def _count(by_node: dict[str, str]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for what in by_node.values():
        counts[what] = counts.get(what, 0) + 1
    return tuple(sorted(counts.items()))


def _phrase(counts: tuple[tuple[str, int], ...]) -> str:
    return "; ".join(f"{what} on {n} node{'s' if n != 1 else ''}" for what, n in counts)
