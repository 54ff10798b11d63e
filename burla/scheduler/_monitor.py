"""What the dashboard shows: a bounded record of jobs, batches, inputs, logs.

The head feeds the monitor every message it handles; the monitor never
influences scheduling.  Memory is bounded: per job at most ``max_log_lines``
log lines (``max_lines_per_input`` per input), ``max_errors`` failed inputs
and per-input durations for the first ``detailed_inputs`` inputs (later
batches keep their mean) are kept, and only the ``keep_finished`` most
recent finished jobs.
Per-input status is derived from batch records, so a ten-million-input job
costs one record per batch, not per input.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..transport.messages import ItemError, JobError, LogBatch, SubmitJob


@dataclass
class BatchRecord:
    start: int
    count: int
    state: str = "running"  # running | done | lost
    node: str = ""
    worker: int = -1
    durations: list[float] = field(default_factory=list)  # per input, early batches only
    mean_duration: float | None = None
    failed: set[int] = field(default_factory=set)
    done: int = 0  # inputs whose results came back (batches may return in parts)
    total_duration: float = 0.0


@dataclass
class JobRecord:
    job_id: str
    function: str
    client: str
    started_at: float
    state: str = "running"
    ended_at: float | None = None
    total: int | None = None
    received: int = 0
    done: int = 0
    failed: int = 0
    retried: dict[int, int] = field(default_factory=dict)
    error: JobError | None = None
    batches: dict[int, BatchRecord] = field(default_factory=dict)
    starts: list[int] = field(default_factory=list)  # sorted keys of batches
    errors: dict[int, ItemError] = field(default_factory=dict)
    logs: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    log_lines: int = 0
    logs_dropped: int = 0
    series: list[tuple[float, int]] = field(default_factory=list)  # (t, done) every 0.5 s at most

    def batch_of(self, index: int) -> BatchRecord | None:
        i = bisect.bisect_right(self.starts, index) - 1
        if i < 0:
            return None
        b = self.batches[self.starts[i]]
        return b if index < b.start + b.count else None


class Monitor:
    def __init__(self, keep_finished: int = 50, max_log_lines: int = 20_000, max_lines_per_input: int = 500,
                 max_errors: int = 1_000, detailed_inputs: int = 10_000):
        self.jobs: OrderedDict[str, JobRecord] = OrderedDict()
        self.keep_finished = keep_finished
        self.max_log_lines = max_log_lines
        self.max_lines_per_input = max_lines_per_input
        self.max_errors = max_errors
        self.detailed_inputs = detailed_inputs  # per-input durations kept for the first N inputs
        # Running batches by node, so a lost node costs what it ran, not every batch of every
        # job kept (1,000 nodes lost at once blocked the head 5 s walking them; issue 10).
        self._running: dict[str, dict[tuple[str, int], None]] = {}

    # --- events ---------------------------------------------------------------------

    def submitted(self, spec: SubmitJob, client: str) -> None:
        now = time.time()
        self.jobs[spec.job_id] = JobRecord(spec.job_id, spec.function_name, client, now, series=[(now, 0)])

    def received(self, job_id: str, count: int) -> None:
        if job := self.jobs.get(job_id):
            job.received += count

    def inputs_done(self, job_id: str, total: int) -> None:
        if job := self.jobs.get(job_id):
            job.total = total

    def dispatched(self, job_id: str, node: str, start: int, count: int) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        if start not in job.batches:
            bisect.insort(job.starts, start)
        job.batches[start] = BatchRecord(start, count, node=node)
        self._running.setdefault(node, {})[(job_id, start)] = None

    def _settled(self, job_id: str, b: BatchRecord) -> None:
        on = self._running.get(b.node)
        if on is not None:
            on.pop((job_id, b.start), None)
            if not on:
                del self._running[b.node]

    def assigned(self, job_id: str, start: int, worker: int) -> None:
        if (job := self.jobs.get(job_id)) and (b := job.batches.get(start)):
            b.worker = worker

    def result(self, job_id: str, start: int, count: int, errors: list[ItemError], durations: list[float]) -> None:
        """Results of ``count`` inputs from ``start``: a whole batch or the next part of one."""
        job = self.jobs.get(job_id)
        if job is None or (b := job.batch_of(start)) is None or b.state == "done":
            return  # (done: sent again, to a detached job's reader or after a head restart)
        count = min(count, b.count - b.done)
        b.done += count
        if b.done >= b.count:
            b.state = "done"
            self._settled(job_id, b)
        if durations:
            b.total_duration += sum(durations)
            b.mean_duration = b.total_duration / b.done
            if b.start < self.detailed_inputs:
                b.durations = b.durations + durations
        job.done += count
        for err in errors:
            b.failed.add(err.index)
            job.failed += 1
            if len(job.errors) < self.max_errors:
                job.errors[err.index] = err
        now = time.time()
        if now - job.series[-1][0] >= 0.5:
            job.series.append((now, job.done))

    def lost(self, job_id: str, start: int, crashed_index: int) -> None:
        job = self.jobs.get(job_id)
        if job is None or (b := job.batches.get(start)) is None:
            return
        self._settled(job_id, b)
        lost_from, end = b.start + b.done, b.start + b.count
        if b.done:  # the inputs that came back stay done; the rest runs again as a new batch
            b.count, b.state = b.done, "done"
        else:
            del job.batches[start]
            job.starts.remove(start)
        for i in range(lost_from, end):
            if i == crashed_index or crashed_index < 0:
                job.retried[i] = job.retried.get(i, 0) + 1

    def node_lost(self, node: str) -> None:
        for job_id, start in list(self._running.pop(node, {})):
            self.lost(job_id, start, -1)

    def logs(self, batch: LogBatch) -> None:
        job = self.jobs.get(batch.job_id)
        if job is None:
            return
        for line in batch.lines:
            lines = job.logs.setdefault(line.index, [])
            if job.log_lines >= self.max_log_lines or len(lines) >= self.max_lines_per_input:
                job.logs_dropped += 1
                continue
            lines.append((line.stream, line.text))
            job.log_lines += 1

    def ended(self, job_id: str, status: str, error: JobError | None) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.state = {"done": "done", "failed": "failed", "canceled": "canceled"}.get(status, status)
        job.error = error
        job.ended_at = time.time()
        job.series.append((job.ended_at, job.done))
        for b in job.batches.values():
            if b.state == "running":
                b.state = "lost" if status != "done" else b.state
                self._settled(job_id, b)
        finished = [j for j in self.jobs.values() if j.state != "running"]
        for old in finished[: max(0, len(finished) - self.keep_finished)]:
            del self.jobs[old.job_id]

    # --- views --------------------------------------------------------------------------

    def summary(self, job: JobRecord) -> dict[str, Any]:
        end = job.ended_at or time.time()
        elapsed = max(end - job.started_at, 1e-9)
        return {
            "job_id": job.job_id, "function": job.function, "client": job.client, "state": job.state,
            "total": job.total, "received": job.received, "done": job.done, "failed": job.failed,
            "retried": sum(job.retried.values()), "started_at": job.started_at, "ended_at": job.ended_at,
            "duration_s": round(end - job.started_at, 3), "rate": round(job.done / elapsed, 1),
            "error": {"kind": job.error.kind, "message": job.error.message} if job.error else None,
        }

    def detail(self, job: JobRecord, offset: int = 0, limit: int = 500) -> dict[str, Any]:
        known = job.total if job.total is not None else job.received
        inputs = []
        for i in range(offset, min(known, offset + limit)):
            b = job.batch_of(i)
            state = "pending" if b is None else "failed" if i in b.failed else b.state
            duration = None
            if b is not None:
                duration = b.durations[i - b.start] if len(b.durations) > i - b.start else b.mean_duration
            inputs.append({
                "index": i, "state": state, "node": b.node if b else None,
                "worker": b.worker if b and b.worker >= 0 else None, "duration_s": duration,
                "retries": job.retried.get(i, 0), "log_lines": len(job.logs.get(i, ())),
            })
        errors = [{"index": e.index, "type": e.type_name, "traceback": e.traceback} for e in job.errors.values()]
        return {**self.summary(job), "inputs": inputs, "offset": offset, "errors": errors,
                "series": job.series + ([] if job.ended_at else [(time.time(), job.done)]),
                "logs_dropped": job.logs_dropped}

    def input_logs(self, job: JobRecord, index: int) -> dict[str, Any]:
        lines = [{"stream": "stderr" if s == 2 else "stdout", "text": t} for s, t in job.logs.get(index, ())]
        err = job.errors.get(index)
        return {"index": index, "lines": lines,
                "error": {"type": err.type_name, "traceback": err.traceback} if err else None}
