"""Detached jobs in the head's scheduling core: results wait for a reader, bounded in
bytes and in time; the uploader may go once every input is in."""

from __future__ import annotations

import msgspec

from burla._errors import ResultsExpired
from burla.client._detached import _ended_error
from burla.scheduler import HeadConfig, HeadState
from burla.scheduler._state import ORPHAN
from burla.transport.messages import (
    InputsStored,
    JobAttached,
    JobEnded,
    JobInfo,
    LogAck,
    LogBatch,
    LogLine,
    ResultBatch,
)

from .test_state import batch, node, result_for, spec, to_client, to_node


def detached(job_id="j"):
    return msgspec.structs.replace(spec(job_id), detach=True)


def uploaded(s: HeadState, n_batches: int, size: int = 2, job_id: str = "j"):
    cmds = s.submit("c1", detached(job_id), 0)
    for i in range(n_batches):
        cmds += s.input_batch("c1", batch(job_id, i * size, size))
    cmds += s.inputs_done("c1", job_id, n_batches * size)
    return cmds


def run_all(s: HeadState, cmds, node_id="n1"):
    """Run what reaches the node until nothing more does; the commands that came out."""
    out = []
    pending = to_node(cmds, node_id)
    while pending:
        b = pending.pop(0)
        got = s.result(node_id, result_for(b))
        out += got
        pending += to_node(got, node_id)
    return out


def test_results_wait_for_a_reader_and_the_uploader_may_go():
    s = HeadState()
    s.node_joined(node("n1"))
    cmds = uploaded(s, 3)
    assert [m.complete for m in to_client(cmds, InputsStored)] == [False, False, False, True]
    s.client_left("c1")  # every input is in: it runs on
    assert s.jobs["j"].client_id == ORPHAN
    out = run_all(s, cmds)
    assert not [c for c in out if isinstance(c.msg, ResultBatch) and c.client_id]  # no one to send them to
    assert s.query("j") == JobInfo("j", "done", 6, 6, 6, True)
    att = s.attach("c2", "j", 0)
    assert [type(c.msg).__name__ for c in att] == ["JobAttached", "ResultBatch", "ResultBatch", "ResultBatch",
                                                   "JobEnded"]
    s.ended_ack("c2", "j")
    assert "j" in s.finished  # not taken yet
    s.result_ack("c2", "j", 2)
    s.client_left("c2")  # it took two of three: the last waits for the next reader
    att = s.attach("c3", "j", 0)
    assert att[0].msg == JobAttached("j", True, 2) and len(to_client(att, ResultBatch)) == 1
    s.ended_ack("c3", "j")
    s.result_ack("c3", "j", 1)
    assert "j" not in s.finished and s.query("j").state == "unknown"


def test_an_uploader_that_leaves_before_every_input_is_in_cancels_the_job():
    s = HeadState()
    s.submit("c1", detached(), 0)
    s.input_batch("c1", batch("j", 0, 2))
    s.client_left("c1")
    info = s.query("j")
    assert info.state == "canceled" and "before it had sent every input" in info.error.message


def test_a_job_no_one_reads_pauses_at_detached_bytes():
    s = HeadState(HeadConfig(detached_bytes=1))
    s.node_joined(node("n1", workers=1))
    cmds = uploaded(s, 4)
    first = to_node(cmds, "n1")
    out = s.result("n1", result_for(first[0]))
    out += s.result("n1", result_for(first[1]))  # (the prefetched one)
    assert not to_node(out, "n1")  # paused: its results hold the byte budget
    att = s.attach("c2", "j", 0)
    assert len(to_client(att, ResultBatch)) == 2
    resumed = s.result_ack("c2", "j", 2)
    assert to_node(resumed, "n1")


def test_prints_of_a_job_no_one_reads_are_dropped_and_never_stall_it():
    s = HeadState()
    s.node_joined(node("n1"))
    uploaded(s, 1)
    out = s.logs("n1", LogBatch("j", [LogLine(0, 1, "hi")]))
    assert [c.msg for c in out] == [LogAck("j", 1)]
    s.attach("c2", "j", 0)
    assert to_client(s.logs("n1", LogBatch("j", [LogLine(0, 1, "hi")])), LogBatch)


def test_results_past_retention_expire_and_the_job_says_so():
    s = HeadState(HeadConfig(retention=100))
    s.node_joined(node("n1"))
    run_all(s, uploaded(s, 2))
    s.tick(0.0)
    s.tick(99.0)
    assert s.query("j").state == "done"
    s.tick(101.0)
    info = s.query("j")
    assert (info.state, info.waiting) == ("expired", 0) and "4 result(s) no client took" in info.error.message
    att = s.attach("c2", "j", 0)
    ended = to_client(att, JobEnded)[0]
    assert isinstance(_ended_error(ended.error), ResultsExpired)
    s.tick(202.0)  # kept as expired as long again, then forgotten
    assert s.query("j").state == "unknown"


def test_any_client_may_cancel_a_detached_job_and_a_cancel_after_the_end_forgets_it():
    s = HeadState()
    s.node_joined(node("n1"))
    uploaded(s, 2)
    assert s.may_cancel("c9", "j") and not s.may_cancel("c9", "nope")
    s.cancel("j", "test")
    assert s.query("j").state == "canceled"
    s.cancel("j", "again")
    assert s.query("j").state == "unknown"


def test_an_uploader_resuming_a_detached_job_that_ended_gets_the_end_and_leaves_the_results():
    from burla.scheduler._restore import Restored

    s = HeadState()
    s.durable = True
    rb = result_for(batch("j", 0, 2))
    ended = JobEnded("j", "failed", None)
    s.restore(Restored(detached(), [], 2, 2, None, 0, [rb], ended), now=0.0)
    out = s.resume("c1", "j", 0)
    assert [type(c.msg).__name__ for c in out] == ["JobResumed", "JobEnded"]
    assert s.finished["j"].resend == [rb] and s.finished["j"].client_id == ORPHAN
    assert len(to_client(s.attach("c2", "j", 0), ResultBatch)) == 1
