"""Nested calls (issue 10): remote_parallel_map inside the function runs on the same cluster, beside
its parent job, even when the parent holds every node -- never on a new cluster, never a deadlock."""

import burla
from burla import remote_parallel_map as rpm

from ..conftest import http_get, wait_until


def inner(y):
    import os
    import time

    time.sleep(0.05)
    return y, os.getppid()  # the node daemon that ran it


def outer(x):
    import os

    from burla import remote_parallel_map

    got = remote_parallel_map(inner, [x * 10 + i for i in range(3)], spinner=False)
    return os.getppid(), got


def failing_inner(y):
    raise ValueError(f"inner {y} failed")


def outer_of_failing(x):
    from burla import remote_parallel_map

    return remote_parallel_map(failing_inner, [x])


def deep(n):
    from burla import remote_parallel_map

    return 1 if n == 0 else 1 + sum(remote_parallel_map(deep, [n - 1, n - 1], spinner=False))


def test_nested_calls_run_beside_a_parent_that_holds_every_node(clusters):
    c = clusters.start(nodes=2, workers_per_node=1)
    burla.connect(c.record.head, c.record.token)
    out = rpm(outer, range(4), spinner=False)  # 4 parents on 2 slots, each waiting on 3 children
    node_pids = {p.pid for p in c.procs[1:]}
    assert [sorted(y for y, _ in got) for _, got in out] == [[x * 10, x * 10 + 1, x * 10 + 2] for x in range(4)]
    assert {pid for _, got in out for _, pid in got} <= node_pids  # the cluster's own nodes
    wait_until(lambda: http_get(c, "/v1/cluster")["jobs_running"] == 0, 10, "every job to end")


def test_nested_calls_three_deep_on_one_node(clusters):
    c = clusters.start(nodes=1, workers_per_node=1)
    burla.connect(c.record.head, c.record.token)
    assert rpm(deep, [2], spinner=False) == [7]  # 1 + 2 x (1 + 2 x 1)


def test_an_error_in_a_nested_call_reaches_the_caller_with_its_type(clusters):
    c = clusters.start(nodes=1, workers_per_node=2)
    burla.connect(c.record.head, c.record.token)
    try:
        rpm(outer_of_failing, [1], spinner=False)
    except ValueError as e:
        assert "inner 1 failed" in str(e)
    else:
        raise AssertionError("the inner error was lost")


def test_cancelling_the_parent_cancels_its_children(clusters):
    c = clusters.start(nodes=1, workers_per_node=2)
    burla.connect(c.record.head, c.record.token)
    gen = rpm(outer, range(40), generator=True, spinner=False)
    next(gen)
    gen.close()  # the client stops the job: its workers die, and with them the nested jobs' clients
    wait_until(lambda: http_get(c, "/v1/cluster")["jobs_running"] == 0, 20, "the nested jobs to be canceled")
    assert rpm(inner, [1], spinner=False)[0][0] == 1  # the cluster works on
