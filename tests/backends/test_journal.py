"""The head's journal against a real Redis that goes away."""

from __future__ import annotations

import asyncio

from burla.scheduler._journal import JobCreated, Journal
from burla.scheduler._records import ToClient
from burla.scheduler.backends import open_backend
from burla.transport.messages import JobNotice, SubmitJob

from .redis_server import RedisServer


def spec(job_id: str) -> SubmitJob:
    return SubmitJob(job_id, "f", b"fn", 1, 0, 0, 0, 0.0, True)


def test_writes_go_before_their_commands_and_a_lasting_outage_fails_the_jobs_once():
    server = RedisServer()
    sent: list[object] = []
    failed: list[str] = []

    async def main() -> None:
        changed = asyncio.Event()

        def send(cmds: list[ToClient]) -> None:
            sent.extend(c.msg for c in cmds)
            changed.set()

        async def until(n: int) -> None:
            while len(sent) < n:
                changed.clear()
                await changed.wait()

        backend = open_backend("redis", server.url)
        await backend.open()
        journal = Journal(backend, send,  # type: ignore[arg-type]
                          lambda why: failed.append(why) or [ToClient("c1", JobNotice("j2", "failed"))], outage_s=1.0)
        journal.start()
        first = ToClient("c1", JobNotice("j1", "accepted"))
        journal.submit([JobCreated(spec("j1"))], [first])
        journal.submit([], [ToClient("c1", JobNotice("j1", "later"))])  # waits behind the write
        assert sent == []
        await until(2)
        assert [m.text for m in sent] == ["accepted", "later"]
        assert (await backend.load("j1")) is not None
        server.kill()  # and it does not come back
        journal.submit([JobCreated(spec("j2"))], [ToClient("c1", JobNotice("j2", "accepted"))])
        await until(4)
        await journal.stop()
        await backend.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        server.close()
    assert len(failed) == 1 and failed[0].startswith("the queue backend failed for 1s")
    assert [m.text for m in sent[2:]] == ["failed", "accepted"]
