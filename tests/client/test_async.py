"""remote_parallel_map_async from a real event loop, on a real local cluster (issue 12)."""

import asyncio
import os
import pathlib
import time

import pytest

import burla
from burla import remote_parallel_map_async as rpm_async

from ..conftest import http_get, wait_until


def nap(x):
    time.sleep(0.2)
    return x * 10


def fails_on_3(x):
    if x == 3:
        raise ValueError("three")
    return x


def waits_for_file(path):
    """Input 0 returns at once; the others wait until the test has created ``path``."""
    if path.endswith(".0"):
        return "first"
    deadline = time.monotonic() + 30
    while not os.path.exists(path.rsplit(".", 1)[0] + ".go"):
        if time.monotonic() > deadline:
            return "timed out waiting for the test"
        time.sleep(0.01)
    return "later"


def test_await_returns_the_list_and_the_loop_keeps_running(on_cluster):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        out = await rpm_async(nap, range(6), spinner=False)
        t.cancel()
        return out, ticks

    out, ticks = asyncio.run(main())
    assert out == [x * 10 for x in range(6)]
    assert ticks >= 20  # 6 x 0.2 s on 2 workers: blocking the loop would leave it at 0


def test_async_for_streams_results_as_they_come(on_cluster, tmp_path):
    base = str(tmp_path / "in")

    async def main():
        got = []
        async for value in rpm_async(waits_for_file, [f"{base}.{i}" for i in range(3)], generator=True,
                                     spinner=False):
            got.append(value)
            if value == "first":  # only now may the others finish: a stream that waited for all would hang
                await asyncio.to_thread(pathlib.Path(base + ".go").touch)
        return got

    assert sorted(asyncio.run(main())) == ["first", "later", "later"]


def test_errors_raise_from_await_and_bad_arguments_at_the_call(on_cluster):
    async def main():
        with pytest.raises(ValueError, match="three") as info:
            await rpm_async(fails_on_3, range(5), spinner=False)
        assert info.value.burla_input_index == 3
        out = await rpm_async(fails_on_3, range(5), raise_errors=False, spinner=False)
        assert isinstance(out[3], ValueError) and out[4] == 4
        with pytest.raises(burla.ConfigError, match="func_cpu"):
            rpm_async(nap, [1], func_cpu=0)
        with pytest.raises(TypeError):
            await rpm_async(nap, [1], generator=True)  # an async iterator: `async for`, not await

    asyncio.run(main())


def test_cancelling_the_awaiting_task_cancels_the_job_on_the_cluster(on_cluster, tmp_path):
    base = str(tmp_path / "never")  # no ".go" file ever: the calls wait until canceled

    async def main():
        task = asyncio.create_task(rpm_async(waits_for_file, [f"{base}.{i}" for i in range(1, 5)], spinner=False))
        await asyncio.to_thread(wait_until, lambda: _running_jobs(on_cluster), 20, "the job to run")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_until(lambda: not _running_jobs(on_cluster), 10, "the job to be canceled on the cluster")
    (job,) = [j for j in http_get(on_cluster, "/v1/jobs")["jobs"] if j["function"] == "waits_for_file"
              and j["state"] != "done"]
    assert job["state"] == "canceled"


def _running_jobs(cluster):
    return [j for j in http_get(cluster, "/v1/jobs")["jobs"] if j["state"] == "running"]
