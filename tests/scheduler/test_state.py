"""The head's scheduling core, driven without sockets or an event loop."""

from collections import Counter

from burla.scheduler import HeadConfig, HeadState
from burla.scheduler._state import NodeState, ToClient, ToNode
from burla.transport._payload import pack, unpack
from burla.transport.messages import (
    INITIAL_INPUT_CREDIT,
    AssignJob,
    InputBatch,
    InputCredit,
    JobAccepted,
    JobEnded,
    ReleaseJob,
    ResultBatch,
    SubmitJob,
)


def spec(job_id="j", max_retries=3, func_cpu=1, func_ram=0, max_parallelism=0):
    return SubmitJob(job_id, "f", b"fn", func_cpu, func_ram, max_parallelism, max_retries, 0.0, True)


def node(node_id, workers=2, cpus=2, ram=8 << 30):
    return NodeState(node_id, "h", cpus, ram, workers)


def batch(job_id, start, n):
    ends, payload = pack(range(start, start + n))
    return InputBatch(job_id, start, ends, 0, payload)


def to_node(cmds, node_id=None, kind=InputBatch):
    return [c.msg for c in cmds if isinstance(c, ToNode) and isinstance(c.msg, kind) and node_id in (None, c.node_id)]


def to_client(cmds, kind):
    return [c.msg for c in cmds if isinstance(c, ToClient) and isinstance(c.msg, kind)]


def result_for(b, seconds=0.0):
    return ResultBatch(b.job_id, b.start, b.ends, [], [seconds] * len(b.ends), b.payload)


def fed(s, client, sp, batches=4, size=1):
    """Submit ``sp`` and send it ``batches`` input batches: nodes are assigned as inputs queue up."""
    cmds = s.submit(client, sp, 0)
    for i in range(batches):
        cmds += s.input_batch(client, batch(sp.job_id, i * size, size))
    return cmds


def test_job_runs_on_free_node_and_ends_when_all_results_delivered():
    s = HeadState()
    s.node_joined(node("n1"))
    cmds = s.submit("c1", spec(), now=0)
    assert to_client(cmds, JobAccepted)[0].input_credit == INITIAL_INPUT_CREDIT
    assert not to_node(cmds, kind=AssignJob)  # nothing to run yet: no node taken
    cmds = s.input_batch("c1", batch("j", 0, 3))
    assert to_node(cmds, "n1", AssignJob)[0].n_workers == 2
    sent = to_node(cmds, "n1")
    s.inputs_done("c1", "j", 3)
    cmds = s.result("n1", result_for(sent[0]))
    assert to_client(cmds, ResultBatch) and to_client(cmds, JobEnded)[0].status == "done"
    assert to_node(cmds, "n1", ReleaseJob)
    assert s.nodes["n1"].job_id is None and not s.jobs


def test_nodes_are_single_tenant_and_second_job_waits():
    s = HeadState()
    s.node_joined(node("n1"))
    s.submit("c1", spec("a"), 0)
    b = to_node(s.input_batch("c1", batch("a", 0, 1)))[0]
    s.submit("c2", spec("b"), 0)
    assert not to_node(s.input_batch("c2", batch("b", 0, 1)), kind=AssignJob)
    s.inputs_done("c1", "a", 1)
    cmds = s.result("n1", result_for(b))
    assigned = to_node(cmds, "n1", AssignJob)
    assert [a.job_id for a in assigned] == ["b"]
    assert to_node(cmds, "n1")[0].job_id == "b"


def test_dead_node_requeues_its_batches_to_another_node():
    s = HeadState()
    s.node_joined(node("n1"))
    s.submit("c", spec(max_parallelism=2), 0)
    sent = to_node(s.input_batch("c", batch("j", 0, 2)), "n1")
    assert sent
    s.node_joined(node("n2"))
    cmds = s.node_left("n1")
    assert to_node(cmds, "n2", AssignJob)
    resent = to_node(cmds, "n2")
    assert [b.start for b in resent] == [0]
    s.inputs_done("c", "j", 2)
    cmds = s.result("n2", result_for(resent[0]))
    assert to_client(cmds, JobEnded)[0].status == "done"


def test_crashed_input_travels_alone_and_fails_after_max_retries():
    s = HeadState()
    s.node_joined(node("n1", workers=1, cpus=1))
    s.submit("c", spec(max_retries=1), 0)
    assert to_node(s.input_batch("c", batch("j", 0, 5)))[0].start == 0
    s.inputs_done("c", "j", 5)
    cmds = s.batch_lost("n1", "j", 0, crashed_index=2, reason="SIGKILL")
    parts = to_node(cmds, "n1")
    # capacity 2 (1 worker x prefetch 2): [0,1] and then the crashed [2] alone
    assert [(p.start, len(p.ends), p.attempt) for p in parts] == [(0, 2, 0), (2, 1, 1)]
    assert unpack(parts[1].ends, parts[1].payload) == [2]
    s.result("n1", result_for(parts[0]))
    cmds = s.batch_lost("n1", "j", 2, crashed_index=2, reason="SIGKILL")
    ended = to_client(cmds, JobEnded)[0]
    assert ended.status == "failed" and ended.error.kind == "WorkerCrashed" and ended.error.input_index == 2


def test_prefetched_batch_of_dead_worker_is_not_charged():
    s = HeadState()
    s.node_joined(node("n1", workers=1, cpus=1))
    s.submit("c", spec(max_retries=0), 0)
    s.input_batch("c", batch("j", 0, 1))
    s.input_batch("c", batch("j", 1, 1))
    cmds = s.batch_lost("n1", "j", 1, crashed_index=-1, reason="x")
    again = to_node(cmds, "n1")
    assert [(b.start, b.attempt) for b in again] == [(1, 0)]


def test_duplicate_or_late_result_is_never_delivered_twice():
    s = HeadState()
    s.node_joined(node("n1"))
    s.submit("c", spec(), 0)
    b = to_node(s.input_batch("c", batch("j", 0, 1)))[0]
    assert to_client(s.result("n1", result_for(b)), ResultBatch)
    assert s.result("n1", result_for(b)) == []


def test_unacknowledged_results_stall_dispatch():
    # window = result_window + 2 x prefetch x slots = 2 + 2 x 1 x 1 = 4 batches
    s = HeadState(HeadConfig(result_window=2, input_queue_batches=8, prefetch_per_worker=1))
    s.node_joined(node("n1", workers=1, cpus=1))
    s.submit("c", spec(), 0)
    sent = []
    for i in range(INITIAL_INPUT_CREDIT):
        sent += to_node(s.input_batch("c", batch("j", i, 1)))
    for i in range(INITIAL_INPUT_CREDIT, 8):
        s.input_batch("c", batch("j", i, 1))
    while sent:  # the client never acknowledges
        sent = to_node(s.result("n1", result_for(sent[0])))
    assert s.jobs["j"].unacked == 4 and s.queue.length("j") == 4  # stalled at the window
    assert to_node(s.result_ack("c", "j", 1)) != []


def test_input_credit_is_bounded_by_queue_size():
    cfg = HeadConfig(input_queue_batches=6, result_window=1)
    s = HeadState(cfg)
    s.submit("c", spec(), 0)  # no node: nothing leaves the queue
    granted, sent = INITIAL_INPUT_CREDIT, 0
    while sent < granted:  # a client that sends whenever it may
        granted += sum(c.batches for c in to_client(s.input_batch("c", batch("j", sent, 1)), InputCredit))
        sent += 1
    assert granted == cfg.input_queue_batches == s.queue.length("j")


def test_input_without_credit_fails_the_job():
    s = HeadState(HeadConfig(input_queue_batches=4))
    s.submit("c", spec(), 0)
    for i in range(4):
        s.input_batch("c", batch("j", i, 1))
    cmds = s.input_batch("c", batch("j", 4, 1))
    assert to_client(cmds, JobEnded)[0].status == "failed"


def test_incompatible_job_is_rejected_with_a_reason():
    s = HeadState()
    s.node_joined(node("n1", cpus=2))
    ended = to_client(s.submit("c", spec(func_cpu=8), 0), JobEnded)[0]
    assert ended.error.kind == "NoCompatibleNodes" and "func_cpu=8" in ended.error.message


def test_func_cpu_and_ram_limit_workers_per_node():
    s = HeadState()
    s.node_joined(node("n1", workers=4, cpus=4, ram=4 << 30))
    assign = to_node(fed(s, "c", spec(func_cpu=1, func_ram=3 << 30)), kind=AssignJob)[0]
    assert assign.n_workers == 1


def test_max_parallelism_caps_workers_across_nodes():
    s = HeadState()
    for i in range(3):
        s.node_joined(node(f"n{i}", workers=2))
    cmds = fed(s, "c", spec(max_parallelism=3), batches=12)
    assert sum(a.n_workers for a in to_node(cmds, kind=AssignJob)) == 3


def test_client_leaving_cancels_its_jobs_and_frees_nodes():
    s = HeadState()
    s.node_joined(node("n1"))
    fed(s, "c", spec())
    cmds = s.client_left("c")
    assert to_node(cmds, "n1", ReleaseJob) and not s.jobs and s.nodes["n1"].job_id is None


def test_job_fails_when_no_node_ever_joins():
    s = HeadState(HeadConfig(no_nodes_timeout=5))
    s.submit("c", spec(), now=100)
    assert s.tick(104) == []
    assert to_client(s.tick(106), JobEnded)[0].status == "failed"


def test_idle_nodes_are_released_to_other_jobs_before_the_job_ends():
    s = HeadState()
    s.node_joined(node("n1"))
    s.node_joined(node("n2"))
    s.submit("c", spec("a"), 0)
    assert to_node(s.input_batch("c", batch("a", 0, 1)))
    s.inputs_done("c", "a", 1)
    holder = next(n for n in s.nodes.values() if n.inflight)
    idle = next(n for n in s.nodes.values() if n is not holder)
    assert idle.job_id is None  # released while "a" still runs elsewhere
    cmds = fed(s, "c2", spec("b"), batches=1)
    assert to_node(cmds, idle.node_id, AssignJob)


def test_restarting_a_busy_node_requeues_its_work():
    from burla.transport.messages import RestartNode

    s = HeadState()
    s.node_joined(node("n1"))
    s.submit("c", spec(), 0)
    b = to_node(s.input_batch("c", batch("j", 0, 2)))[0]
    cmds = s.restart_node("n1")
    kinds = [type(c.msg) for c in cmds if isinstance(c, ToNode)]
    assert kinds[:2] == [ReleaseJob, RestartNode]
    # the same node is free again, so it is reassigned and gets the batch back
    assert to_node(cmds, "n1", AssignJob) and to_node(cmds, "n1")[0].start == b.start


def test_client_is_told_in_one_line_when_a_node_is_lost():
    from burla.transport.messages import JobNotice

    s = HeadState()
    s.node_joined(node("n1"))
    s.node_joined(node("n2"))
    s.submit("c", spec(max_parallelism=2), 0)
    s.input_batch("c", batch("j", 0, 1))
    holder = next(n.node_id for n in s.nodes.values() if n.inflight)
    notices = to_client(s.node_left(holder), JobNotice)
    assert len(notices) == 1 and holder in notices[0].text and "1 input batch" in notices[0].text


def test_log_batches_go_to_the_client_and_its_acks_back_to_their_nodes():
    from burla.transport.messages import LogAck, LogBatch, LogLine

    s = HeadState()
    s.node_joined(node("n1"))
    s.node_joined(node("n2"))
    fed(s, "c1", spec(), batches=8)  # more than n1 holds: n2 serves the job too
    lines = LogBatch("j", [LogLine(0, 1, "hi")])
    assert [c.msg for c in s.logs("n1", lines) if isinstance(c, ToClient)] == [lines]
    s.logs("n2", lines)
    s.logs("n1", lines)
    acks = to_node(s.log_ack("c1", "j", 3), kind=LogAck)
    assert sorted(a.batches for a in acks) == [1, 2]
    assert s.log_ack("c2", "j", 1) == []  # not this client's job
    assert s.logs("n9", lines) == []  # not a node of the job


def test_workers_per_node_above_the_cpus_are_all_used_unless_func_cpu_asks_for_more():
    s = HeadState()
    s.node_joined(node("n1", workers=25, cpus=2))
    assert to_node(fed(s, "c", spec("io")), kind=AssignJob)[0].n_workers == 25
    s.cancel("io", "done")
    assert to_node(fed(s, "c", spec("cpu", func_cpu=2)), kind=AssignJob)[0].n_workers == 1


def part_of(b, lo, hi):
    """Results of inputs b.start+lo .. b.start+hi-1, as a worker streams them."""
    ends, payload = pack(range(b.start + lo, b.start + hi))
    return ResultBatch(b.job_id, b.start + lo, ends, [], [0.0] * (hi - lo), payload)


def test_a_batch_may_come_back_in_parts_each_delivered_once():
    s = HeadState()
    s.node_joined(node("n1"))
    s.submit("c1", spec(), 0)
    b = to_node(s.input_batch("c1", batch("j", 0, 4)), "n1")[0]
    s.inputs_done("c1", "j", 4)
    first = s.result("n1", part_of(b, 0, 1))
    assert [r.start for r in to_client(first, ResultBatch)] == [0] and ("j", 0) in s.nodes["n1"].inflight
    assert s.result("n1", part_of(b, 0, 1)) == []  # the same part again: dropped
    assert s.result("n1", part_of(b, 2, 4)) == []  # a gap: dropped
    s.result("n1", part_of(b, 1, 2))
    cmds = s.result("n1", part_of(b, 2, 4))
    assert to_client(cmds, ResultBatch)[0].start == 2 and to_client(cmds, JobEnded)[0].status == "done"


def test_a_batch_lost_after_some_parts_requeues_only_the_rest():
    s = HeadState()
    s.node_joined(node("n1", workers=1))
    s.submit("c1", spec(), 0)
    b = to_node(s.input_batch("c1", batch("j", 0, 4)), "n1")[0]
    s.result("n1", part_of(b, 0, 2))
    cmds = s.batch_lost("n1", "j", 0, crashed_index=2, reason="SIGKILL")
    again = to_node(cmds, "n1")
    # only the two unfinished inputs run again: the crashed one alone and charged, the other not
    assert [(x.start, len(x.ends), x.attempt) for x in again] == [(2, 1, 1), (3, 1, 0)]
    s.node_left("n1")
    sent = to_node(s.node_joined(node("n2", workers=1)), "n2")
    assert sorted(x.start for x in sent) == [2, 3]


def test_a_small_job_takes_only_the_nodes_it_can_feed_on_a_1000_node_cluster():
    s = HeadState()
    for i in range(1000):
        s.node_joined(node(f"n{i}", workers=10, cpus=10))
    cmds, _ = feed_with_credit(s, "c1", "small", n_batches=10, size=1)  # as the client sends them: one each
    assert len(to_node(cmds, kind=AssignJob)) == 2  # 10 inputs: half of two nodes' slots, 998 left free
    assert sum(1 for n in s.nodes.values() if n.job_id is None) == 998
    cmds = fed(s, "c2", spec("next"), batches=4)
    assert [a.job_id for a in to_node(cmds, kind=AssignJob)] == ["next"]  # starts at once on a free node


def feed_with_credit(s, client, job_id, n_batches, size):
    """A client that sends a batch whenever it has credit (as the real one does)."""
    credit, sent, cmds = INITIAL_INPUT_CREDIT, 0, []
    cmds += s.submit(client, spec(job_id), 0)
    while sent < n_batches and credit > 0:
        credit -= 1
        out = s.input_batch(client, batch(job_id, sent * size, size))
        sent += 1
        credit += sum(c.batches for c in to_client(out, InputCredit))
        cmds += out
    return cmds, sent


def test_a_big_job_spreads_over_nodes_before_it_packs_them():
    s = HeadState()
    for i in range(4):
        s.node_joined(node(f"n{i}", workers=4))
    cmds, _ = feed_with_credit(s, "c", "j", n_batches=8, size=1)
    per_node = Counter(c.node_id for c in cmds if isinstance(c, ToNode) and isinstance(c.msg, InputBatch))
    assert sorted(per_node.values()) == [2, 2, 2, 2]  # half of each node's slots, then another node


def test_every_slot_of_a_100_node_cluster_gets_work():
    s = HeadState()
    for i in range(100):
        s.node_joined(node(f"n{i}", workers=10, cpus=10))
    cmds, sent = feed_with_credit(s, "c", "big", n_batches=1000, size=10)  # 10,000 inputs
    assert sent == 1000  # the windows grew with the job: it was never starved of credit
    assert len(to_node(cmds, kind=AssignJob)) == 100
    assert all(len(n.inflight) >= n.n_workers for n in s.nodes.values())  # no idle slot


def test_head_memory_per_job_is_a_byte_budget():
    s = HeadState(HeadConfig(job_bytes=1 << 20))  # 1 MiB
    s.node_joined(node("n1", workers=1))
    granted = INITIAL_INPUT_CREDIT + sum(c.batches for c in to_client(s.submit("c", spec("j"), 0), InputCredit))
    big = 256 * 1024
    for i in range(INITIAL_INPUT_CREDIT):
        ends, payload = [big], b"x" * big
        granted += sum(c.batches for c in to_client(s.input_batch("c", InputBatch("j", i, ends, 0, payload)),
                                                      InputCredit))
    assert s.jobs["j"].held_bytes == 4 * big
    assert granted == INITIAL_INPUT_CREDIT  # at the budget: no more credit until results come back


class Cluster:
    """Nodes that run what the head sends them, oldest batch first, as real ones do."""

    def __init__(self, s):
        self.s = s
        self.held = {}  # node -> batches in flight there
        self.job_of = {}  # node -> job it was last assigned
        self.releases = []  # (node, batches of the released job it still held)

    def apply(self, cmds):
        credit = 0
        for c in cmds:
            if isinstance(c, ToNode) and isinstance(c.msg, AssignJob):
                self.job_of[c.node_id] = c.msg.job_id
            elif isinstance(c, ToNode) and isinstance(c.msg, InputBatch):
                assert self.job_of[c.node_id] == c.msg.job_id  # single tenant: only its job's batches
                self.held.setdefault(c.node_id, []).append(c.msg)
            elif isinstance(c, ToNode) and isinstance(c.msg, ReleaseJob):
                mine = [b for b in self.held.get(c.node_id, []) if b.job_id == c.msg.job_id]
                self.releases.append((c.node_id, len(mine)))  # the job's batches still held there
            elif isinstance(c, ToClient) and isinstance(c.msg, InputCredit):
                credit += c.msg.batches
        return credit

    def finish_one(self, node_id, client, seconds=0.0, job_id=None):
        held = self.held[node_id]
        b = held.pop(next(i for i, x in enumerate(held) if job_id in (None, x.job_id)))
        self.apply(self.s.result(node_id, result_for(b, seconds)))
        self.apply(self.s.result_ack(client, b.job_id, 1))

    def jobs_nodes(self, job_id):
        return {n for n, st in self.s.nodes.items() if st.job_id == job_id}

    def a_round_of(self, job_id, client):
        """Each node serving ``job_id`` finishes its oldest batch."""
        for n in sorted(self.held):
            if self.held[n] and self.job_of[n] == job_id:
                self.finish_one(n, client)


def cluster_of(n_nodes, workers, big_batches):
    """``n_nodes`` nodes, all held by job "a" with ``big_batches`` batches of one input."""
    s = HeadState()
    for i in range(n_nodes):
        s.node_joined(node(f"n{i}", workers=workers))
    c = Cluster(s)
    c.apply(feed_with_credit(s, "ca", "a", n_batches=big_batches, size=1)[0])
    return s, c


def test_a_second_job_gets_a_fair_share_of_a_busy_cluster_between_calls():
    s, c = cluster_of(10, workers=2, big_batches=500)
    assert len(c.jobs_nodes("a")) == 10  # a holds the whole cluster
    cmds, _ = feed_with_credit(s, "cb", "b", n_batches=100, size=1)
    c.apply(cmds)
    assert not c.jobs_nodes("b") and not c.releases  # nothing taken mid-call
    draining = {n for n, st in s.nodes.items() if st.draining}
    assert len(draining) == 5  # a's half is fed no more
    for _ in range(4):  # each worker finishes its running call and its prefetched one (2 workers)
        c.a_round_of("a", "ca")
    assert c.jobs_nodes("b") == draining and len(c.jobs_nodes("a")) == 5
    assert all(still == 0 for _, still in c.releases)  # nodes changed hands only between calls
    assert {b.job_id for n in draining for b in c.held[n]} == {"b"}  # b's batches run there


def test_nodes_go_back_to_the_big_job_when_the_small_one_ends():
    s, c = cluster_of(4, workers=1, big_batches=200)
    c.apply(fed(s, "cb", spec("b"), batches=1))
    c.apply(s.inputs_done("cb", "b", 1))
    while not c.jobs_nodes("b"):
        c.a_round_of("a", "ca")
    (b_node,) = c.jobs_nodes("b")
    c.finish_one(b_node, "cb")
    assert "b" not in s.jobs and c.jobs_nodes("a") == set(s.nodes)  # a has the whole cluster again


def test_five_thousand_queued_jobs_cancelled_together_end_and_leave_the_cluster_working():
    s = HeadState()
    s.node_joined(node("n1", workers=1))
    s.node_joined(node("n2", workers=1))
    c = Cluster(s)
    cmds = []
    for i in range(5000):
        cmds += fed(s, "q", spec(f"q{i}"), batches=1)
    c.apply(cmds)
    assert len(s.wanting) == 4998  # two run, the rest wait their turn without costing each event
    ended = to_client(s.client_left("q"), JobEnded)
    assert len(ended) == 5000 and not s.jobs and not s.wanting
    assert all(n.job_id is None for n in s.nodes.values())
    c.apply(fed(s, "c", spec("next"), batches=2))
    assert c.jobs_nodes("next") == {"n1", "n2"}


def test_slow_calls_go_one_per_slot_so_a_node_changes_hands_after_one_call():
    s, c = cluster_of(4, workers=2, big_batches=100)
    assert all(len(h) == 4 for h in c.held.values())  # quick until shown otherwise: prefetched
    for _ in range(2):
        for n in sorted(c.held):
            c.finish_one(n, "ca", seconds=1.0)
    assert all(len(h) == 2 for h in c.held.values())  # 1 s calls: one per slot, none waiting behind
    cmds, _ = feed_with_credit(s, "cb", "b", n_batches=10, size=1)
    c.apply(cmds)
    for n in sorted(c.held):  # one call per worker later, half the nodes are b's
        c.finish_one(n, "ca", seconds=1.0)
        c.finish_one(n, "ca", seconds=1.0)
    assert len(c.jobs_nodes("b")) == 2 and len(c.jobs_nodes("a")) == 2


def child_spec(job_id, parent):
    return SubmitJob(job_id, "f", b"fn", 1, 0, 0, 3, 0.0, True, parent=parent)


def test_a_nested_job_runs_beside_its_parent_that_holds_every_node():
    s = HeadState()
    s.node_joined(node("n1", workers=2))
    c = Cluster(s)
    c.apply(fed(s, "c", spec("parent"), batches=2))  # both slots run calls that wait on children
    cmds = fed(s, "w", child_spec("child", "parent"), batches=4)
    c.apply(cmds)
    (a,) = to_node(cmds, "n1", AssignJob)
    assert a.job_id == "child" and a.guest and a.n_workers == 2  # workers of its own, beside the parent's
    assert s.nodes["n1"].job_id == "parent" and [b.job_id for b in c.held["n1"]].count("child") == 4
    c.apply(s.inputs_done("w", "child", 4))
    for _ in range(4):
        c.finish_one("n1", "w", job_id="child")
    assert "child" not in s.jobs and ("n1", 0) in c.releases  # done: it left, its workers with it
    assert s.nodes["n1"].job_id == "parent" and not s.nodes["n1"].guests


def test_nested_jobs_get_a_worker_pool_per_depth_never_more():
    s = HeadState()
    s.node_joined(node("n1", workers=2))
    fed(s, "c", spec("root"), batches=2)
    a = to_node(fed(s, "w1", child_spec("kid1", "root"), batches=2), kind=AssignJob)
    b = to_node(fed(s, "w2", child_spec("kid2", "root"), batches=2), kind=AssignJob)
    g = to_node(fed(s, "w3", child_spec("grandkid", "kid1"), batches=2), kind=AssignJob)
    assert [x.job_id for x in a] == ["kid1"] and not b  # depth 1's pool is kid1's: kid2 waits its turn
    assert [(x.job_id, x.guest) for x in g] == [("grandkid", True)]  # depth 2 has a pool of its own
    cmds = s.cancel("kid1", "done")
    assert [x.job_id for x in to_node(cmds, kind=AssignJob)] == ["kid2"]  # kid1's pool went to kid2


def test_a_job_of_another_tree_never_runs_beside_a_node_s_job():
    s = HeadState()
    s.node_joined(node("n1", workers=2))
    fed(s, "c", spec("a"), batches=2)
    assert not to_node(fed(s, "c2", child_spec("x", "not-a-job"), batches=2), kind=AssignJob)


def test_a_node_whose_job_leaves_stays_with_its_nested_job():
    s = HeadState()
    s.node_joined(node("n1", workers=1))
    c = Cluster(s)
    c.apply(fed(s, "c", spec("parent"), batches=1))
    c.apply(s.inputs_done("c", "parent", 1))
    c.apply(fed(s, "w", child_spec("child", "parent"), batches=3))
    c.apply(fed(s, "o", spec("other"), batches=1))  # another tree waits for the node
    c.finish_one("n1", "c", job_id="parent")  # the parent ends; its child still has calls queued there
    assert s.nodes["n1"].job_id == "child" and not s.nodes["n1"].guests
    assert c.job_of["n1"] != "other"


def test_a_lost_node_requeues_the_batches_of_every_job_it_served():
    s = HeadState()
    s.node_joined(node("n1", workers=1))
    fed(s, "c", spec("parent"), batches=1)
    fed(s, "w", child_spec("child", "parent"), batches=1)
    s.node_left("n1")
    assert s.queue.length("parent") == 1 and s.queue.length("child") == 1
    assert not s.jobs["parent"].nodes and not s.jobs["child"].nodes


def test_a_duplicate_or_out_of_order_input_batch_fails_the_job_with_a_reason():
    for starts in ([0, 0], [0, 5], [1]):
        s = HeadState()
        s.node_joined(node("n1"))
        s.submit("c", spec("j"), 0)
        cmds = []
        for start in starts:
            cmds += s.input_batch("c", batch("j", start, 1))
        ended = to_client(cmds, JobEnded)
        assert ended and ended[0].status == "failed" and "expected" in ended[0].error.message, starts
        assert "j" not in s.jobs and s.nodes["n1"].job_id is None
