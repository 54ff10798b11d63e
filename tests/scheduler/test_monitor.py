"""The dashboard's record of jobs: what a lost node costs it."""

from burla.scheduler._monitor import Monitor
from burla.transport.messages import SubmitJob


def test_a_lost_node_touches_only_the_batches_it_was_running():
    m = Monitor()
    for job_id in ("a", "b"):
        m.submitted(SubmitJob(job_id, "f", b"", 1, 0, 0, 3, 0.0, True), "c")
        for start in range(0, 1000, 10):
            m.dispatched(job_id, f"n{(start // 10) % 20}", start, 10)
    m.result("a", 0, 10, [], [0.1] * 10)  # n0's first batch of "a" is done: not lost with n0
    m.node_lost("n0")
    a, b = m.jobs["a"], m.jobs["b"]
    assert a.batches[0].state == "done" and 200 not in a.batches and 200 not in b.batches  # requeued
    assert a.batches[10].state == "running" and sum(a.retried.values()) == 40  # its other 4 batches of 10
    assert "n0" not in m._running and len(m._running) == 19  # the index holds running batches only
    m.ended("a", "canceled", None)
    assert all(k[0] == "b" for on in m._running.values() for k in on)
