"""Both queue backends, one contract: the in-process one and Redis (a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from burla.scheduler.backends import QueueBackend, open_backend

from .redis_server import RedisServer


@pytest.fixture(params=["memory", "redis"])
def backend(request, redis_url) -> Iterator[QueueBackend]:
    b = open_backend(request.param, redis_url if request.param == "redis" else "")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(b.open())
    b.run = loop.run_until_complete  # type: ignore[attr-defined]
    yield b
    loop.run_until_complete(b.close())
    loop.close()


def test_a_job_keeps_what_it_needs_to_resume(backend):
    run = backend.run
    run(backend.create_job("j1", b"spec"))
    run(backend.add_inputs("j1", 0, 3, b"in0-2"))
    run(backend.add_inputs("j1", 3, 2, b"in3-4"))
    run(backend.set_attempts("j1", 4, 2))
    assert run(backend.store_result("j1", 0, 2, b"r0-1"))
    job = run(backend.load("j1"))
    assert job.spec == b"spec" and job.inputs == {0: b"in0-2", 3: b"in3-4"} and job.attempts == {4: 2}
    assert job.results == [b"r0-1"] and job.total == -1 and job.ended == b"" and job.done == 2
    assert [job.is_done(i) for i in range(6)] == [True, True, False, False, False, False]
    run(backend.inputs_done("j1", 5))
    assert run(backend.store_result("j1", 2, 1, b"r2"))  # batch 0 is all done now: its inputs go
    assert run(backend.store_result("j1", 3, 2, b"r3-4"))
    job = run(backend.load("j1"))
    assert job.inputs == {} and job.results == [b"r0-1", b"r2", b"r3-4"] and job.total == 5 and job.done == 5
    run(backend.results_acked("j1", 2))
    run(backend.results_acked("j1", 2))  # retried: no harm
    job = run(backend.load("j1"))
    assert job.results == [b"r3-4"] and job.acked == 2
    run(backend.results_acked("j1", 3))
    assert run(backend.load("j1")).results == []
    assert run(backend.job_ids()) == ["j1"]


def test_a_second_result_for_any_done_input_is_refused_and_changes_nothing(backend):
    run = backend.run
    run(backend.create_job("j2", b"s"))
    run(backend.add_inputs("j2", 10, 4, b"in"))
    assert run(backend.store_result("j2", 10, 2, b"a"))
    assert not run(backend.store_result("j2", 10, 2, b"again"))  # a rerun after a head restart
    assert not run(backend.store_result("j2", 11, 3, b"overlaps"))
    assert not run(backend.store_result("nope", 0, 1, b"unknown job"))
    job = run(backend.load("j2"))
    assert job.results == [b"a"] and job.inputs == {10: b"in"} and job.done == 2
    # a batch split around a crashed input comes back as several results: each counts
    for start in (12, 13):
        assert run(backend.store_result("j2", start, 1, b"x"))
    assert run(backend.load("j2")).inputs == {}


def test_a_result_write_sent_again_after_a_lost_reply_is_not_taken_for_a_duplicate(backend):
    run = backend.run
    run(backend.create_job("j5", b"s"))
    run(backend.add_inputs("j5", 0, 2, b"in"))
    assert run(backend.store_result("j5", 0, 2, b"r", "head1.7"))
    assert run(backend.store_result("j5", 0, 2, b"r", "head1.7"))  # the same write again: still True
    assert not run(backend.store_result("j5", 0, 2, b"r", "head2.1"))  # another head's rerun: refused
    assert run(backend.load("j5")).results == [b"r"]


def test_an_ended_job_drops_its_inputs_but_keeps_results_until_deleted(backend):
    run = backend.run
    run(backend.create_job("j3", b"s"))
    run(backend.add_inputs("j3", 0, 2, b"in"))
    assert run(backend.store_result("j3", 0, 1, b"r"))
    run(backend.end_job("j3", b"how it ended"))
    job = run(backend.load("j3"))
    assert job.ended == b"how it ended" and job.inputs == {} and job.results == [b"r"]
    run(backend.delete_job("j3"))
    assert run(backend.load("j3")) is None and run(backend.job_ids()) == []


def test_results_are_found_among_many_batches(backend):
    run = backend.run
    run(backend.create_job("j4", b"s"))
    for start in range(0, 2000, 10):
        run(backend.add_inputs("j4", start, 10, b"b%d" % start))
    for start in reversed(range(0, 2000, 10)):  # out of order, as nodes answer
        assert run(backend.store_result("j4", start, 10, b"r"))
    job = run(backend.load("j4"))
    assert job.inputs == {} and job.done == 2000 and len(job.results) == 200


def test_redis_survives_a_restart_with_persistence_on():
    server = RedisServer(persist=True)
    try:
        loop = asyncio.new_event_loop()
        b = open_backend("redis", server.url)
        loop.run_until_complete(b.open())
        loop.run_until_complete(b.create_job("p", b"spec"))
        loop.run_until_complete(b.add_inputs("p", 0, 2, b"in"))
        assert loop.run_until_complete(b.store_result("p", 0, 1, b"r0"))
        server.kill()
        server.start()
        job = loop.run_until_complete(b.load("p"))  # the client reconnects by itself
        assert job.inputs == {0: b"in"} and job.results == [b"r0"] and job.is_done(0) and not job.is_done(1)
        loop.run_until_complete(b.close())
        loop.close()
    finally:
        server.close()


def test_an_unreachable_redis_is_one_clear_error():
    from burla import QueueUnavailable

    from .redis_server import _free_port

    b = open_backend("redis", f"redis://127.0.0.1:{_free_port()}/0")
    with pytest.raises(QueueUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1:\d+/0"):
        asyncio.run(b.open())


def test_a_redis_password_never_shows():
    b = open_backend("redis", "redis://:hunter2@10.0.0.5:6379/0")
    assert b.where == "redis://***@10.0.0.5:6379/0"


def test_an_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"queue\.type: .mongo. is not a queue backend; use memory or redis"):
        open_backend("mongo")


def test_the_in_process_done_ranges_agree_with_a_set_of_indices():
    import random

    from burla.scheduler.backends._memory import Ranges

    rng = random.Random(7)
    for _ in range(200):
        ranges, model = Ranges(), set()
        for _ in range(40):
            lo = rng.randrange(0, 200)
            hi = lo + rng.randrange(1, 12)
            assert ranges.overlaps(lo, hi) == bool(model & set(range(lo, hi)))
            if not model & set(range(lo, hi)):
                ranges.add(lo, hi)
                model |= set(range(lo, hi))
        assert ranges.total() == len(model)
        assert all(e < s2 for e, s2 in zip(ranges.ends, ranges.starts[1:], strict=False)), "merged and sorted"
        bits = ranges.bits()
        assert {i for i in range(len(bits) * 8) if bits[i >> 3] & (0x80 >> (i & 7))} == model
