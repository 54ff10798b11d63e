"""burla.Executor beyond the stdlib's own tests (issue 12, item 1): what a
cluster adds -- prints, limits, cancels, broken executors, Ctrl-C, errors."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures

import pytest

import burla
from tests.conftest import ROOT, http_get, wait_until

STATE = "unset"


def set_state(value):
    global STATE
    STATE = value


def get_state():
    return STATE


def window(seconds):
    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start, time.time()


def shout(x):
    print(f"line {x} from the cluster")
    return x


def test_prints_reach_stdout_and_an_initializer_global_is_what_calls_read(on_cluster, capfd):
    with burla.Executor(max_workers=2, initializer=set_state, initargs=("ready",)) as ex:
        assert [f.result() for f in [ex.submit(shout, i) for i in range(5)]] == list(range(5))
        assert {ex.submit(get_state).result() for _ in range(6)} == {"ready"}  # (functions of a test module
    out = capfd.readouterr().out  # travel by value: one globals dict per module on each worker)
    assert all(f"line {i} from the cluster" in out for i in range(5)), out


def test_max_workers_bounds_calls_running_at_once(on_cluster):
    with burla.Executor(max_workers=1) as ex:
        spans = [f.result() for f in [ex.submit(window, 0.15) for _ in range(4)]]
    spans.sort(key=lambda s: s[1])
    assert all(b[1] >= a[2] - 0.01 for a, b in itertools.pairwise(spans)), spans  # one at a time


def test_cancel_works_on_queued_calls_which_never_run(on_cluster, tmp_path):
    mark = str(tmp_path / "ran")
    with burla.Executor(max_workers=1) as ex:
        first = ex.submit(time.sleep, 0.5)
        queued = [ex.submit(open, f"{mark}{i}", "w") for i in range(10)]
        cancelled = [f for f in queued if f.cancel()]
        assert len(cancelled) >= 8, "only about two calls per worker are sent ahead"
        first.result()
    assert all(f.cancelled() for f in cancelled)
    ran = [i for i in range(10) if os.path.exists(f"{mark}{i}")]
    assert len(ran) == 10 - len(cancelled)


def test_an_unpicklable_call_fails_its_own_future_and_the_executor_goes_on(on_cluster):
    with burla.Executor(max_workers=2) as ex:
        bad = ex.submit(len, threading.Lock())
        with pytest.raises(burla.SerializationError, match=r"the call len\(\.\.\.\) cannot be pickled"):
            bad.result()
        assert ex.submit(pow, 2, 5).result() == 32


def test_a_call_timeout_fails_that_call_only(on_cluster):
    with burla.Executor(max_workers=2, func_timeout=0.3) as ex:
        slow, quick = ex.submit(time.sleep, 5), ex.submit(pow, 3, 2)
        with pytest.raises(burla.CallTimeout):
            slow.result(timeout=10)
        assert quick.result() == 9 and ex.submit(pow, 2, 2).result() == 4


def test_a_call_that_keeps_killing_its_worker_breaks_the_executor(on_cluster):
    ex = burla.Executor(max_workers=2, max_retries=1)
    try:
        doomed = ex.submit(os._exit, 3)
        with pytest.raises(burla.BrokenExecutor) as got:
            doomed.result(timeout=30)
        assert isinstance(got.value, futures.BrokenExecutor)  # what stdlib users catch
        assert isinstance(got.value.__cause__, burla.WorkerCrashed)
        assert ex._broken
        with pytest.raises(burla.BrokenExecutor):
            ex.submit(pow, 2, 2)
    finally:
        ex.shutdown()


def test_an_initializer_error_breaks_the_executor_naming_it(on_cluster):
    def boom():
        raise RuntimeError("no model file")

    with burla.Executor(max_workers=2, initializer=boom) as ex, \
            pytest.raises(burla.BrokenExecutor, match=r"initializer .*boom.*RuntimeError: no model file"):
        ex.submit(pow, 2, 2).result(timeout=30)


def test_bad_arguments_fail_at_once_with_the_fix(on_cluster):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        burla.Executor(max_workers=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        burla.Executor(initializer=3)  # type: ignore[arg-type]
    with pytest.raises(burla.ConfigError, match="func_cpu"):
        burla.Executor(func_cpu=0)
    with burla.Executor(max_workers=1) as ex, pytest.raises(ValueError, match="chunksize must be >= 1"):
        ex.map(abs, [1], chunksize=0)


def test_a_dropped_executor_finishes_its_calls_then_ends_its_job(on_cluster):
    ex = burla.Executor(max_workers=2)
    fut = ex.submit(window, 0.2)
    del ex
    assert fut.result(timeout=30)[2] > 0
    def ended() -> bool:
        jobs = [j for j in http_get(on_cluster, "/v1/jobs")["jobs"] if j["function"] == "Executor"]
        return bool(jobs) and jobs[0]["state"] == "done" and jobs[0]["done"] == 1

    wait_until(ended, 10, "the executor's job to end")


def test_ctrl_c_in_a_with_block_cancels_the_job_on_the_cluster(on_cluster, tmp_path):
    script = textwrap.dedent(f"""
        import time, burla
        burla.connect({on_cluster.record.head!r}, {on_cluster.record.token!r})
        with burla.Executor(max_workers=2) as ex:
            fs = [ex.submit(time.sleep, 60) for _ in range(4)]
            print("submitted", flush=True)
            fs[0].result()
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "submitted"
        wait_until(lambda: any(n["job_id"] for n in http_get(on_cluster, "/v1/cluster")["nodes"]), 10,
                   "the calls to start")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert "KeyboardInterrupt" in err and time.monotonic() - t0 < 10
        wait_until(lambda: all(n["job_id"] is None for n in http_get(on_cluster, "/v1/cluster")["nodes"]), 10,
                   "the node to be free (the job canceled, not left sleeping)")
    finally:
        p.kill()
        p.wait()


def plus_one(x):
    return x + 1


def sum_on_an_executor(n):
    with burla.Executor(max_workers=2) as ex:
        return sum(ex.map(plus_one, range(n)))


def test_an_executor_inside_a_call_runs_its_calls_on_the_same_cluster(on_cluster):
    with burla.Executor(max_workers=2) as ex:  # both slots may hold a parent: nested calls still run
        assert [f.result(timeout=60) for f in [ex.submit(sum_on_an_executor, n) for n in (3, 4)]] == [6, 10]
    assert burla.remote_parallel_map(sum_on_an_executor, [5], spinner=False) == [15]
