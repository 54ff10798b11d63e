"""The node daemon's policy, driven without processes, sockets or an event loop."""

from __future__ import annotations

import msgspec
import pytest

from burla.runtime._node_state import (
    START_FAILURES_FATAL,
    TIMEOUT_GRACE,
    UNEXPLAINED_DEATHS_FATAL,
    ApplyLimits,
    Command,
    Kill,
    NodeState,
    PrepareEnvironment,
    Respawn,
    Spawn,
    ToHead,
    ToWorker,
    WorkerPhase,
)
from burla.runtime._status import LOADING
from burla.transport._payload import pack
from burla.transport.messages import (
    AssignJob,
    BatchAssigned,
    BatchLost,
    Dist,
    EndJob,
    InputBatch,
    InputBatchView,
    JobSetupFailed,
    ResultBatch,
    ResultBatchView,
    StartJob,
    decode,
    encode,
)


def assign(job_id: str = "j", n_workers: int = 2, prefetch: int = 2, image: str = "", func_timeout: float = 0.0,
           func_ram: int = 0, func_gpu: int = 0, guest: bool = False) -> AssignJob:
    return AssignJob(job_id, b"fn", n_workers, func_timeout, func_ram, 1, func_gpu, image, prefetch, guest)


def batch(job_id: str, start: int, n: int = 1) -> InputBatchView:
    ends, payload = pack(range(start, start + n))
    view = decode(encode(InputBatch(job_id, start, ends, 0, payload)))
    assert isinstance(view, InputBatchView)
    return view


def result(b: InputBatchView) -> ResultBatchView:
    view = decode(encode(ResultBatch(b.job_id, b.start, b.ends, [], [0.0] * len(b.ends), b"")))
    assert isinstance(view, ResultBatchView)
    return view


def of(cmds: list[Command], kind: type) -> list:
    return [c for c in cmds if isinstance(c, kind)]


def sent(cmds: list[Command], kind: type, wid: int | None = None) -> list:
    return [c.msg for c in of(cmds, ToWorker) if isinstance(c.msg, kind) and wid in (None, c.wid)]


def told_head(cmds: list[Command], kind: type) -> list:
    return [c.msg for c in of(cmds, ToHead) if isinstance(c.msg, kind)]


def ready_node(n: int = 2, default_image: str = "") -> NodeState:
    """A node whose ``n`` workers have started and connected."""
    s = NodeState("n1", n, default_image)
    spawns = s.start()
    assert [c.wid for c in spawns] == list(range(n))
    for wid in range(n):
        assert s.worker_hello(wid) == []
    return s


def serving(s: NodeState, a: AssignJob) -> list[Command]:
    """Assign ``a`` and apply every worker's limits: the workers then serve it."""
    cmds = s.assign(a)
    for c in of(cmds, ApplyLimits):
        cmds += s.limits_applied(c.wid, c.job_id, True)
    return cmds


def test_assign_applies_limits_then_starts_the_job_on_its_workers():
    s = ready_node(3)
    cmds = s.assign(assign(n_workers=2))
    limits = of(cmds, ApplyLimits)
    assert len(limits) == 2 and all(s.workers[c.wid].phase is WorkerPhase.JOINING for c in limits)
    started = s.limits_applied(limits[0].wid, "j", True)
    assert sent(started, StartJob, limits[0].wid)[0].job_id == "j"
    assert s.workers[limits[0].wid].phase is WorkerPhase.SERVING
    assert [wid for wid, _ in s.serving()] == [limits[0].wid]


def test_batches_go_to_the_least_loaded_worker_up_to_the_prefetch_the_head_chose():
    s = ready_node(2)
    serving(s, assign(prefetch=3))
    cmds: list[Command] = []
    for i in range(8):
        cmds += s.batch(batch("j", i))
    per_worker = {wid: len(sent(cmds, InputBatchView, wid)) for wid in (0, 1)}
    assert per_worker == {0: 3, 1: 3}
    assert len(told_head(cmds, BatchAssigned)) == 6
    assert [b.start for b in s.job.pending] == [6, 7]
    # a result frees one slot on that worker, which takes the next pending batch
    first = s.workers[0].outstanding[0]
    cmds = s.worker_result(0, result(first))
    assert told_head(cmds, ResultBatchView)[0].start == first.start
    assert [b.start for b in sent(cmds, InputBatchView, 0)] == [6]


def test_a_result_for_a_batch_the_worker_does_not_hold_is_dropped():
    s = ready_node(1)
    serving(s, assign(n_workers=1))
    s.batch(batch("j", 0))
    assert s.worker_result(0, result(batch("j", 5))) == []
    assert len(s.workers[0].outstanding) == 1


def test_batches_of_another_job_are_ignored():
    s = ready_node(1)
    serving(s, assign("a", n_workers=1))
    assert s.batch(batch("b", 0)) == []
    assert not s.job.pending and not s.workers[0].outstanding


def test_a_worker_that_dies_reports_each_batch_with_the_crashed_input_only_where_it_belongs():
    s = ready_node(1)
    serving(s, assign(n_workers=1, prefetch=2))
    s.batch(batch("j", 0, 3))
    s.batch(batch("j", 3, 3))
    s.worker_disconnected(0)
    assert s.workers[0].phase is WorkerPhase.EXITING
    assert s.batch(batch("j", 6)) == []  # nothing is routed to a worker whose connection ended
    cmds = s.worker_exited(0, "worker died from SIGKILL", crashed_index=1)
    lost = told_head(cmds, BatchLost)
    assert [(b.start, b.crashed_index) for b in lost] == [(0, 1), (3, -1)]
    assert all(b.reason == "worker died from SIGKILL" for b in lost)
    (spawn,) = of(cmds, Spawn)
    assert spawn.wid == 1 and 1 in s.workers and 0 not in s.workers
    # the replacement joins the running job once it connects
    limits = of(s.worker_hello(1), ApplyLimits)
    assert limits and limits[0].job_id == "j"
    assert [b.start for b in sent(s.limits_applied(1, "j", True), InputBatchView)] == [6]


def _die(s: NodeState, crashed_index: int = -1) -> list[Command]:
    """The job's newest worker dies; its replacement connects and serves the job."""
    wid = max(s.workers)
    s.worker_disconnected(wid)
    cmds = s.worker_exited(wid, "worker exited with code 3", crashed_index)
    (spawn,) = of(cmds, Spawn)
    s.worker_hello(spawn.wid)
    s.limits_applied(spawn.wid, "j", True)
    return cmds


def test_workers_that_keep_dying_outside_any_call_fail_the_job_once():
    s = ready_node(1)
    serving(s, assign(n_workers=1))
    failed = [told_head(_die(s, LOADING), JobSetupFailed) for _ in range(UNEXPLAINED_DEATHS_FATAL + 2)]
    assert [len(f) for f in failed] == [0] * (UNEXPLAINED_DEATHS_FATAL - 1) + [1, 0, 0]
    (why,) = failed[UNEXPLAINED_DEATHS_FATAL - 1]
    assert why.kind == "WorkerCrashed" and "while unpickling the function" in why.message


def test_a_result_between_deaths_outside_calls_resets_the_count():
    s = ready_node(1)
    serving(s, assign(n_workers=1))
    for _ in range(3 * UNEXPLAINED_DEATHS_FATAL):
        s.batch(batch("j", 0))
        wid = max(s.workers)
        assert told_head(s.worker_result(wid, result(s.workers[wid].outstanding[0])), ResultBatchView)
        assert not told_head(_die(s), JobSetupFailed)  # one death since the last result
    for _ in range(UNEXPLAINED_DEATHS_FATAL - 2):
        assert not told_head(_die(s), JobSetupFailed)
    assert "between calls" in told_head(_die(s), JobSetupFailed)[0].message


def test_deaths_during_a_call_are_charged_to_the_input_not_the_job():
    s = ready_node(1)
    serving(s, assign(n_workers=1))
    for _ in range(2 * UNEXPLAINED_DEATHS_FATAL):
        s.batch(batch("j", 0))
        assert not told_head(_die(s, crashed_index=0), JobSetupFailed)


def test_kill_reason_wins_over_the_exit_reason():
    s = ready_node(1)
    serving(s, assign(n_workers=1, func_timeout=1.0))
    s.batch(batch("j", 0))
    assert s.call_running(0, 0, 1.0 + TIMEOUT_GRACE - 0.1) == []
    assert of(s.call_running(0, 0, 1.0 + TIMEOUT_GRACE + 0.1), Kill) == [Kill(0)]
    lost = told_head(s.worker_exited(0, "worker died from SIGKILL", 0), BatchLost)
    assert "past func_timeout=1s" in lost[0].reason


def test_memory_over_func_ram_kills_the_worker():
    s = ready_node(1)
    serving(s, assign(n_workers=1, func_ram=100 << 20))
    assert s.memory_used(0, 99 << 20) == []
    assert s.memory_used(0, 101 << 20) == [Kill(0)]
    assert "over func_ram=100 MiB" in s.workers[0].kill_reason


def test_watchdog_samples_are_ignored_without_a_limit_or_a_job():
    s = ready_node(1)
    assert s.call_running(0, 0, 1e6) == [] and s.memory_used(0, 1 << 40) == []
    serving(s, assign(n_workers=1))
    assert s.call_running(0, 0, 1e6) == [] and s.memory_used(0, 1 << 40) == []


def test_release_resets_idle_workers_and_kills_busy_ones():
    s = ready_node(2)
    serving(s, assign(n_workers=2, prefetch=1))
    s.batch(batch("j", 0))
    busy = next(w.wid for w in s.workers.values() if w.outstanding)
    idle = 1 - busy
    cmds = s.release("j")
    assert sent(cmds, EndJob, idle) and not sent(cmds, EndJob, busy)
    assert of(cmds, Kill) == [Kill(busy)]
    assert s.job is None and all(w.phase is WorkerPhase.IDLE and w.job_id is None for w in s.workers.values())
    # the killed worker's exit reports nothing lost: the head already requeued its batch
    cmds = s.worker_exited(busy, "worker died from SIGKILL", 0)
    assert not told_head(cmds, BatchLost) and of(cmds, Spawn)


def test_release_of_another_job_changes_nothing():
    s = ready_node(1)
    serving(s, assign("a", n_workers=1))
    assert s.release("b") == [] and s.job is not None


def test_a_doomed_worker_is_never_given_a_job():
    s = ready_node(2)
    serving(s, assign("a", n_workers=2, prefetch=1))
    s.batch(batch("a", 0))
    s.release("a")  # kills the busy worker
    cmds = s.assign(assign("b", n_workers=2))
    assert len(of(cmds, ApplyLimits)) == 1


def test_limits_applied_for_a_job_that_ended_meanwhile_are_ignored():
    s = ready_node(1)
    (stale,) = of(s.assign(assign("a", n_workers=1)), ApplyLimits)
    (fresh,) = of(s.assign(assign("b", n_workers=1)), ApplyLimits)  # "a" ends; the worker joins "b"
    assert (stale.job_id, fresh.job_id) == ("a", "b")
    assert s.limits_applied(stale.wid, "a", True) == []
    assert sent(s.limits_applied(fresh.wid, "b", True), StartJob)[0].job_id == "b"


def test_limits_that_fail_leave_the_worker_idle():
    s = ready_node(1)
    (limits,) = of(s.assign(assign(n_workers=1)), ApplyLimits)
    assert s.limits_applied(limits.wid, "j", False) == []
    assert s.workers[limits.wid].phase is WorkerPhase.IDLE


def test_at_most_n_workers_of_the_job():
    s = ready_node(4)
    cmds = serving(s, assign(n_workers=3))
    assert len(sent(cmds, StartJob)) == 3 and len(s.serving()) == 3


def test_workers_in_the_wrong_image_make_room_for_the_jobs_image():
    s = ready_node(2, default_image="burla:1")
    cmds = s.assign(assign(n_workers=2, image="user:1"))
    assert sorted(c.wid for c in of(cmds, Kill)) == [0, 1]
    assert "job's image" in s.workers[0].kill_reason
    cmds = s.worker_exited(0, "worker container killed (SIGKILL)")
    (spawn,) = of(cmds, Spawn)
    assert spawn.image == "user:1"


def test_workers_that_never_connect_back_off_then_fail_the_job():
    s = NodeState("n1", 1, "img", rng=lambda: 1.0)  # no jitter: the backoff's upper bound
    s.start()
    s.assign(assign(n_workers=1))
    delays = []
    wid = 0
    for attempt in range(1, START_FAILURES_FATAL + 1):
        cmds = s.worker_exited(wid, "worker exited with code 127")
        (respawn,) = of(cmds, Respawn)
        delays.append(respawn.delay)
        failed = told_head(cmds, JobSetupFailed)
        assert bool(failed) == (attempt == START_FAILURES_FATAL)
        (spawn,) = of(s.replace_worker(), Spawn)
        wid = spawn.wid
    assert delays == sorted(delays) and delays[0] > 0
    assert "python3 >= 3.10" in failed[0].message and failed[0].kind == "JobFailed"
    # once a worker connects, the backoff starts over
    s.worker_hello(wid)
    s.worker_exited(wid, "worker died from SIGKILL")
    s.replace_worker()
    assert of(s.worker_exited(wid + 1, "x"), Respawn)[0].delay == delays[0]


def test_a_launcher_failure_is_reported_to_the_job_and_retried():
    s = NodeState("n1", 1)
    s.start()
    s.assign(assign(n_workers=1))
    cmds = s.spawn_failed(0, "image 'x' not found")
    assert "image 'x' not found" in told_head(cmds, JobSetupFailed)[0].message
    assert of(cmds, Respawn) and 0 not in s.workers
    assert of(s.replace_worker(), Spawn)
    assert s.replace_worker() == []  # the pool is full again


def test_restart_kills_every_worker():
    s = ready_node(3)
    serving(s, assign(n_workers=2))
    cmds = s.restart()
    assert sorted(c.wid for c in of(cmds, Kill)) == [0, 1, 2] and s.job is None
    assert all(s.workers[w].kill_reason == "node restarted" for w in range(3))


def test_a_hello_from_an_unknown_or_connected_worker_is_refused():
    s = ready_node(1)
    with pytest.raises(KeyError):
        s.worker_hello(7)
    with pytest.raises(KeyError):
        s.worker_hello(0)


def test_exit_of_an_unknown_worker_is_ignored():
    assert NodeState("n1", 1).worker_exited(3, "x") == []


def test_prefetch_comes_from_the_head():
    assert "prefetch" in {f.name for f in msgspec.structs.fields(AssignJob)}
    from burla.scheduler import HeadConfig, HeadState
    from burla.scheduler._state import NodeState as HeadNode
    from burla.transport.messages import SubmitJob

    head = HeadState(HeadConfig(prefetch_per_worker=5))
    head.node_joined(HeadNode("n1", "h", 2, 8 << 30, 2))
    head.submit("c", SubmitJob("j", "f", b"fn", 1, 0, 0, 3, 0.0, True), 0)
    ends, payload = pack([1])
    cmds = head.input_batch("c", InputBatch("j", 0, ends, 0, payload))
    (a,) = [c.msg for c in cmds if isinstance(c.msg, AssignJob)]
    assert a.prefetch == 5


def test_log_acks_go_back_to_the_workers_that_sent_the_oldest_batches():
    from burla.transport.messages import LogAck, LogBatch, LogLine

    s = ready_node(2)
    serving(s, assign(n_workers=2))
    for wid in (0, 1, 0):
        assert told_head(s.worker_logs(wid, LogBatch("j", [LogLine(0, 1, "x")])), LogBatch)
    cmds = s.log_ack(LogAck("j", 2))
    assert {(c.wid, c.msg.batches) for c in of(cmds, ToWorker)} == {(0, 1), (1, 1)}
    assert [(c.wid, c.msg.batches) for c in of(s.log_ack(LogAck("j", 5)), ToWorker)] == [(0, 1)]
    assert s.log_ack(LogAck("other", 1)) == []
    assert s.worker_logs(0, LogBatch("other", [])) == []  # lines of a job this node no longer serves


def test_parts_of_a_batch_are_forwarded_and_the_last_part_completes_it():
    s = ready_node(1)
    serving(s, assign(n_workers=1, prefetch=1))
    s.batch(batch("j", 0, 3))
    s.batch(batch("j", 3, 1))
    whole = s.workers[0].outstanding[0]

    def part(lo: int, hi: int) -> ResultBatchView:
        view = decode(encode(ResultBatch("j", lo, list(range(1, hi - lo + 1)), [], [0.0] * (hi - lo), b"x" * (hi - lo))))
        assert isinstance(view, ResultBatchView)
        return view

    cmds = s.worker_result(0, part(0, 1))
    assert told_head(cmds, ResultBatchView) and not sent(cmds, InputBatchView)  # still running the rest
    assert s.workers[0].outstanding[0] is whole
    cmds = s.worker_result(0, part(1, 3))
    assert told_head(cmds, ResultBatchView) and [b.start for b in sent(cmds, InputBatchView)] == [3]
    assert s.worker_result(0, part(7, 8)) == []  # not the worker's oldest batch


def test_a_guest_job_of_the_tree_gets_workers_of_its_own_beside_the_nodes_job():
    s = ready_node(2)
    serving(s, assign("parent"))
    busy = [batch("parent", 0), batch("parent", 1)]
    for b in busy:
        s.batch(b)  # both warm workers run the parent's calls (which wait on nested calls)
    cmds = s.assign(assign("child", n_workers=2, guest=True))
    spawns = of(cmds, Spawn)
    assert len(spawns) == 2 and "parent" in s.jobs  # the parent keeps its workers and its calls
    for sp in spawns:
        limits = of(s.worker_hello(sp.wid), ApplyLimits)
        assert [lim.job_id for lim in limits] == ["child"]
        s.limits_applied(sp.wid, "child", True)
    out = s.batch(batch("child", 0))
    assert [c.wid for c in of(out, ToWorker)] and all(c.wid in {sp.wid for sp in spawns} for c in of(out, ToWorker))
    # the child ends: its workers, idle and above the warm pool, are stopped; the parent's are untouched
    ended = s.release("child")
    assert {c.wid for c in of(ended, Kill)} <= {sp.wid for sp in spawns} and len(of(ended, Kill)) == 2
    for sp in spawns:
        assert of(s.worker_exited(sp.wid, "killed"), Spawn) == []  # the pool is back at its 2
    assert [w.job_id for w in s.workers.values()] == ["parent", "parent"]


def test_the_guest_stays_when_the_nodes_first_job_leaves():
    s = ready_node(2)
    serving(s, assign("parent"))
    cmds = s.assign(assign("child", n_workers=2, guest=True))
    for sp in of(cmds, Spawn):
        s.worker_hello(sp.wid)
    s.release("parent")  # the head gave the node to the child (same tree): its calls go on
    assert list(s.jobs) == ["child"]
    kills = of(s.limits_applied(2, "child", True) + s.limits_applied(3, "child", True), Kill)
    assert not kills and sum(1 for w in s.workers.values() if w.job_id == "child") == 2


def test_an_owner_assignment_ends_every_job_of_the_old_tree():
    s = ready_node(2)
    serving(s, assign("parent"))
    s.assign(assign("child", guest=True))
    s.assign(assign("other"))
    assert list(s.jobs) == ["other"]


# --- a job's environment (issue 12, item 4) ---------------------------------------------


def with_requirements(job_id: str = "j") -> AssignJob:
    a = assign(job_id)
    a.requirements = [Dist("six", "1.16.0"), Dist("mini-thing", "0.3.1", True)]
    a.wheels = {"mini_thing-0.3.1-py3-none-any.whl": b"PK"}
    return a


def container_node(n: int = 2) -> NodeState:
    s = NodeState("n1", n, "img", prepares_environments=True)
    s.start()
    for wid in range(n):
        s.worker_hello(wid)
    return s


def test_no_worker_joins_a_job_before_its_environment_is_in_place_then_each_starts_with_it():
    s = container_node()
    cmds = s.assign(with_requirements())
    assert [(c.job_id, c.image) for c in of(cmds, PrepareEnvironment)] == [("j", "img")]
    assert not of(cmds, ApplyLimits)
    assert s.batch(batch("j", 0)) == []  # it waits here, on no worker
    cmds = s.environment_ready("j", "/status/env/envs/abc")
    assert sorted(c.wid for c in of(cmds, ApplyLimits)) == [0, 1]
    started = [m.msg for m in of(s.limits_applied(0, "j", True), ToWorker) if isinstance(m.msg, StartJob)]
    assert [m.paths for m in started] == [["/status/env/envs/abc"]]


def test_an_environment_that_cannot_be_made_fails_the_job_with_the_reason():
    s = container_node()
    s.assign(with_requirements())
    cmds = s.environment_failed("j", "installing six 1.16.0 on this node failed (exit 1); pip said: ...")
    (failed,) = [c.msg for c in of(cmds, ToHead)]
    assert isinstance(failed, JobSetupFailed) and failed.kind == "JobFailed"
    assert failed.message == "node n1: installing six 1.16.0 on this node failed (exit 1); pip said: ..."
    assert not of(cmds, ApplyLimits)


def test_an_environment_for_a_job_released_meanwhile_changes_nothing():
    s = container_node()
    s.assign(with_requirements())
    s.release("j")
    assert s.environment_ready("j", "/x") == [] and s.environment_failed("j", "late") == []


def test_nodes_whose_workers_share_their_interpreter_ignore_requirements():
    s = ready_node()
    cmds = s.assign(with_requirements())
    assert not of(cmds, PrepareEnvironment) and sorted(c.wid for c in of(cmds, ApplyLimits)) == [0, 1]
    started = [m.msg for m in of(s.limits_applied(0, "j", True), ToWorker) if isinstance(m.msg, StartJob)]
    assert [m.paths for m in started] == [[]]


def test_requirements_and_paths_cross_the_wire():
    a = with_requirements()
    assert decode(encode(a)) == a
    assert decode(encode(StartJob("j", b"fn", 0.0, ["/p"]))) == StartJob("j", b"fn", 0.0, ["/p"])


def test_a_worker_serves_jobs_of_one_environment_only_the_next_gets_fresh_workers():
    """Modules a job imported stay imported: a worker that served environment A would hand a
    job of environment B (an edited project, another version) A's modules."""
    s = container_node()
    s.assign(with_requirements("a"))
    s.environment_ready("a", "/env/A")
    for wid in (0, 1):
        s.limits_applied(wid, "a", True)
    s.release("a")
    s.assign(with_requirements("a2"))
    cmds = s.environment_ready("a2", "/env/A")  # the same environment: the same workers
    assert sorted(c.wid for c in of(cmds, ApplyLimits)) == [0, 1] and not of(cmds, Kill)
    for wid in (0, 1):
        s.limits_applied(wid, "a2", True)
    s.release("a2")
    s.assign(with_requirements("b"))
    cmds = s.environment_ready("b", "/env/B")
    assert not of(cmds, ApplyLimits)
    assert sorted(c.wid for c in of(cmds, Kill)) == [0, 1]
    assert {s.workers[wid].kill_reason for wid in (0, 1)} == {"replaced by a worker in the job's image and environment"}
