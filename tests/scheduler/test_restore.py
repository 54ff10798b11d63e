"""A job written to a queue backend by one HeadState, restored by the next: what is
queued again, what is sent again, and what happens when its client never comes back."""

from __future__ import annotations

import asyncio
from collections import Counter

from burla.scheduler import HeadConfig, HeadState
from burla.scheduler._journal import _step
from burla.scheduler._restore import _last_done, restored, runs_left
from burla.scheduler._state import ORPHAN
from burla.scheduler.backends import StoredJob
from burla.scheduler.backends._memory import MemoryBackend
from burla.transport.messages import (
    InputBatch,
    InputBatchView,
    InputsStored,
    JobEnded,
    JobResumed,
    ResultBatch,
    ResultBatchView,
    decode,
    encode,
    payload_bytes,
)

from .test_state import batch, node, spec, to_client, to_node


def view(msg):
    return decode(encode(msg))  # as the head holds what it received


def written(s: HeadState, backend: MemoryBackend) -> None:
    """Write what ``s`` noted to the backend, as the journal does."""
    asyncio.run(backend.write([_step(f) for f in s.take_facts()]))


def restart(backend: MemoryBackend, job_id: str = "j", config: HeadConfig = HeadConfig()) -> HeadState:
    s = HeadState(config)
    s.durable = True
    stored = asyncio.run(backend.load(job_id))
    assert stored is not None
    s.restore(restored(stored), now=100.0)
    return s


def ran(s: HeadState, cmds, node_id: str = "n1") -> Counter:
    """Run every batch the commands send to nodes, and what that sends, to the end: results' tally."""
    got: Counter = Counter()
    pending = list(cmds)
    while pending:
        cmd = pending.pop(0)
        msg = cmd.msg
        if isinstance(msg, ResultBatch | ResultBatchView):
            got.update(range(msg.start, msg.start + len(msg.ends)))
        if isinstance(msg, InputBatch | InputBatchView):
            out = s.result(node_id, view(result_of(msg)))
            out += s.result_ack("c2", msg.job_id, 1)
            pending += out
    return got


def result_of(b) -> ResultBatch:
    return ResultBatch(b.job_id, b.start, list(b.ends), [], [0.0] * len(b.ends), payload_bytes(b.payload))


def test_a_restored_job_runs_only_what_was_not_done_and_resends_what_the_client_lacked():
    backend = MemoryBackend()
    s = HeadState()
    s.durable = True
    s.node_joined(node("n1", workers=1))
    cmds = s.submit("c1", spec(), 0)
    for i in range(3):
        cmds += s.input_batch("c1", view(batch("j", i * 4, 4)))
    assert [m.upto for m in to_client(cmds, InputsStored)] == [4, 8, 12]
    sent = to_node(cmds, kind=InputBatchView)
    cmds = s.result("n1", view(result_of(sent[0])))  # inputs 0-3: final, and acked
    cmds += s.result_ack("c1", "j", 1)
    cmds += s.result("n1", view(result_of(sent[1])))  # 4-7: final, never reached the client
    written(s, backend)

    s2 = restart(backend)
    assert s2.jobs["j"].client_id == ORPHAN
    s2.node_joined(node("n1", workers=1))
    assert not to_node(s2.node_joined(node("n2")))  # an orphan runs nothing
    out = s2.resume("c2", "j", results_held=1)
    resumed = to_client(out, JobResumed)[0]
    assert resumed.received == 12 and resumed.input_credit == HeadConfig().input_queue_batches - 1  # 8-11 queued
    again = to_client(out, ResultBatchView)
    assert [(r.start, len(r.ends)) for r in again] == [(4, 4)]
    got = ran(s2, out)
    assert got == Counter(range(4, 12))  # 4-7 sent again, 8-11 run
    more = s2.input_batch("c2", view(batch("j", 12, 2)))
    more += s2.inputs_done("c2", "j", 14)
    assert ran(s2, more) == Counter(range(12, 14))
    assert "j" not in s2.jobs


def test_a_job_that_ended_before_its_last_results_went_out_sends_them_after_a_restart():
    backend = MemoryBackend()
    s = HeadState()
    s.durable = True
    s.node_joined(node("n1", workers=2))
    cmds = s.submit("c1", spec(), 0) + s.input_batch("c1", view(batch("j", 0, 2)))
    cmds += s.input_batch("c1", view(batch("j", 2, 2))) + s.inputs_done("c1", "j", 4)
    for b in to_node(cmds, kind=InputBatchView):
        s.result("n1", view(result_of(b)))
    written(s, backend)  # both final and the job ended; the head dies before sending any of it
    assert "j" not in s.jobs and asyncio.run(backend.load("j")).ended

    s2 = restart(backend)
    out = s2.resume("c2", "j", results_held=1)  # the first result had reached the client
    assert [type(c.msg).__name__ for c in out] == ["JobResumed", "ResultBatchView", "JobEnded"]
    assert out[1].msg.start == 2 and out[2].msg.status == "done"
    assert s2.resume("c3", "j", 0)[0].msg.received == -1  # no one else takes it over
    s2.ended_ack("c2", "j")
    written(s2, backend)
    assert asyncio.run(backend.load("j")) is None


def test_a_finished_job_is_forgotten_when_its_client_holds_the_end_or_after_resume_timeout():
    backend = MemoryBackend()
    s = HeadState(HeadConfig(resume_timeout=30))
    s.durable = True
    s.node_joined(node("n1", workers=2))
    for job_id, client in (("a", "c1"), ("b", "c1"), ("c", "c2")):
        s.submit(client, spec(job_id), 0)
        s.cancel(job_id, "test")
    written(s, backend)
    assert set(s.finished) == {"a", "b", "c"}
    s.ended_ack("c1", "a")
    s.client_left("c1")
    assert set(s.finished) == {"c"}
    s.tick(0.0)
    s.tick(29.0)
    assert "c" in s.finished
    s.tick(31.0)
    assert not s.finished
    written(s, backend)
    assert asyncio.run(backend.job_ids()) == []


def test_crashed_inputs_travel_alone_with_their_attempts_and_done_ones_are_skipped():
    stored = StoredJob("j", bytes(encode(spec())))
    b = view(batch("j", 10, 6))
    stored.inputs[10] = encode(b)
    stored.attempts = {12: 2}
    bits = bytearray(2)
    for i in (10, 14):
        bits[i >> 3] |= 0x80 >> (i & 7)
    stored.done_bits = bytes(bits)
    parts = runs_left(decode(stored.inputs[10]), stored)
    assert [(p.start, len(p.ends), p.attempt) for p in parts] == [(11, 1, 0), (12, 1, 2), (13, 1, 0), (15, 1, 0)]
    job = restored(stored)
    assert (job.received, job.delivered, job.total) == (16, 2, None)
    assert _last_done(stored.done_bits) == 14 and _last_done(b"") == -1 and _last_done(b"\x80") == 0


def test_an_untouched_batch_is_forwarded_as_it_was_received():
    stored = StoredJob("j", bytes(encode(spec())))
    stored.inputs[0] = encode(view(batch("j", 0, 3)))
    (part,) = runs_left(decode(stored.inputs[0]), stored)
    assert bytes(part.raw) == bytes(stored.inputs[0])


def test_an_orphan_whose_client_never_comes_back_is_canceled_after_resume_timeout():
    backend = MemoryBackend()
    s = HeadState()
    s.submit("c1", spec(), 0)
    s.input_batch("c1", view(batch("j", 0, 2)))
    written(s, backend)
    s2 = restart(backend, config=HeadConfig(resume_timeout=30))
    s2.node_joined(node("n1"))
    assert not s2.tick(129.0)
    ended = [c for c in s2.tick(131.0) if isinstance(c.msg, JobEnded)]
    assert ended and ended[0].msg.status == "canceled" and "did not resume the job within 30s" in ended[0].msg.error.message
    assert "j" not in s2.jobs and any(f.__class__.__name__ == "JobFinished" for f in s2.take_facts())


def test_resuming_a_job_the_head_does_not_hold_says_so():
    s = HeadState()
    (cmd,) = s.resume("c1", "nope", 3)
    assert cmd.msg == JobResumed("nope", -1, 0)
    s.submit("c1", spec(), 0)
    (cmd,) = s.resume("c2", "j", 0)  # a live client's job cannot be taken over
    assert cmd.msg.received == -1 and s.jobs["j"].client_id == "c1"
