"""What the client is told while nodes install a job's environment (issue 12, item 4)."""

from __future__ import annotations

from burla.scheduler._installs import Installs
from burla.scheduler._records import NodeState, ToClient
from burla.scheduler._state import HeadState
from burla.transport.messages import JobNotice, SubmitJob
from tests.scheduler.test_state import batch

WHAT = "pandas 2.2.3, pytz 2024.1"


def test_reports_of_many_nodes_are_one_line_per_change_then_one_when_all_are_done():
    i = Installs()
    assert i.report("j", "n1", WHAT, False, 10.0) == [] and i.report("j", "n2", WHAT, False, 10.1) == []
    assert i.tick() == [("j", f"installing {WHAT} on 2 nodes…")]
    assert i.tick() == []  # nothing changed: nothing said
    i.report("j", "n3", WHAT, False, 10.5)
    assert i.tick() == [("j", f"installing {WHAT} on 3 nodes…")]
    assert i.report("j", "n1", WHAT, True, 12.0) == [] and i.report("j", "n2", WHAT, True, 13.0) == []
    assert i.report("j", "n3", WHAT, True, 14.25) == [f"installed {WHAT} on 3 nodes in 4.2s"]
    assert i.tick() == []
    assert i.report("j", "n1", WHAT, True, 15.0) == []  # a late or repeated "done" says nothing


def test_a_node_lost_while_installing_is_not_waited_for_and_other_images_count_apart():
    i = Installs()
    i.report("j", "n1", WHAT, False, 0.0)
    i.report("j", "n2", "six 1.16.0", False, 0.0)
    assert i.tick() == [("j", f"installing {WHAT} on 1 node; six 1.16.0 on 1 node…")]
    i.node_left("n1")
    assert i.report("j", "n2", "six 1.16.0", True, 2.0) == ["installed six 1.16.0 on 1 node in 2.0s"]


def test_the_head_tells_the_jobs_client_at_its_tick_and_only_for_its_nodes():
    s = HeadState()
    s.node_joined(NodeState("n1", "h", 2, 2**30, 2, "container", environments=True))
    s.submit("c1", SubmitJob("j", "f", b"fn", 1, 0, 0, 3, 0.0, True), 0.0)
    s.input_batch("c1", batch("j", 0, 2))
    assert "n1" in s.jobs["j"].nodes
    assert s.installing("n2", "j", WHAT, False, 0.0) == []  # not one of the job's nodes
    assert s.installing("n1", "j", WHAT, False, 0.0) == []
    assert s.tick(1.0) == [ToClient("c1", JobNotice("j", f"installing {WHAT} on 1 node…"))]
    assert s.installing("n1", "j", WHAT, True, 3.0) == [ToClient("c1", JobNotice("j", f"installed {WHAT} on 1 node "
                                                                                   "in 3.0s"))]
    s.installing("n1", "j", WHAT, False, 4.0)
    s.cancel("j", "bye")
    assert s.tick(5.0) == []  # an ended job is forgotten
