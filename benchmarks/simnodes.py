"""Simulated nodes (S2): many node connections from one process, speaking the
real protocol to a real head, so one machine can show what 1,000 nodes do.

Each simulated node registers with ``NodeHello`` and serves its job as a real
node daemon would, with its "workers" as tasks of this process: a worker runs
the function here (its prints become ``LogBatch`` lines), except
``benchmarks.tasks.hold(seconds)``, which it awaits without blocking the other
nodes and answers with its node id.  Results go back one input at a time, as
real workers stream them.

    python -m benchmarks.simnodes HOST:PORT TOKEN --nodes 500 --slots 10 --prefix a

Prints ``REGISTERED <seconds>`` once every node is registered, then serves
until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import time
from typing import Any

import cloudpickle

from burla import _loop
from burla.transport import Connection, TransportConfig, connect
from burla.transport._payload import pack, unpack
from burla.transport.messages import (
    AssignJob,
    InputBatchView,
    LogAck,
    LogBatch,
    LogLine,
    NodeHello,
    ReleaseJob,
    ResultBatch,
    Welcome,
)


class SimNode:
    def __init__(self, conn: Connection, node_id: str):
        self.conn, self.node_id = conn, node_id
        self.holds = False
        self.job: AssignJob | None = None
        self.function: Any = None
        self.queue: asyncio.Queue[InputBatchView] = asyncio.Queue()
        self.workers: list[asyncio.Task[None]] = []  # started as batches arrive, up to n_workers
        self._idle = 0  # workers waiting for a batch

    async def serve(self) -> None:
        while True:
            match await self.conn.recv():
                case AssignJob() as assign:
                    self._end_job()
                    self.job = assign
                    self.function = _load(assign.function)
                    self.holds = (getattr(self.function, "__module__", ""), getattr(self.function, "__name__", "")) \
                        == ("benchmarks.tasks", "hold")
                case InputBatchView() as batch if self.job and batch.job_id == self.job.job_id:
                    self.queue.put_nowait(batch)
                    if len(self.workers) < self.job.n_workers and self.queue.qsize() > self._idle:
                        self.workers.append(asyncio.create_task(self._worker()))
                case ReleaseJob():
                    self._end_job()
                case LogAck() | InputBatchView():
                    pass

    def _end_job(self) -> None:
        for w in self.workers:
            w.cancel()
        self.workers, self.job, self._idle = [], None, 0
        self.queue = asyncio.Queue()

    async def _worker(self) -> None:
        queue = self.queue
        while True:
            self._idle += 1
            try:
                batch = await queue.get()
            finally:
                self._idle -= 1
            for i, args in enumerate(unpack(batch.ends, batch.payload)):
                index = batch.start + i
                t0 = time.perf_counter()
                if self.holds:
                    await asyncio.sleep(args)
                    result: Any = self.node_id
                else:
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out):
                        result = self.function(args)
                    if text := out.getvalue():
                        lines = [LogLine(index, 1, line) for line in text.splitlines()]
                        self.conn.send_nowait(LogBatch(batch.job_id, lines))
                ends, payload = pack([result])
                self.conn.send_nowait(ResultBatch(batch.job_id, index, ends, [], [time.perf_counter() - t0],
                                                  bytes(payload)))  # type: ignore[arg-type]


_functions: dict[bytes, Any] = {}


def _load(blob: bytes) -> Any:
    """The job's function, unpickled once per process: 500 simulated nodes share one CPU,
    where real ones would each unpickle it on their own."""
    if blob not in _functions:
        _functions.clear()
        _functions[blob] = cloudpickle.loads(blob)
    return _functions[blob]


async def run_node(address: tuple[str, int], token: str, node_id: str, slots: int,
                   registered: asyncio.Event, transport: TransportConfig) -> None:
    for attempt in range(50):
        try:
            conn = await connect(address[0], address[1], token, transport)
            break
        except Exception:  # the head is overloaded: try again, as nodes do
            await asyncio.sleep(0.05 * (attempt + 1))
    else:
        raise SystemExit(f"{node_id} could not connect")
    conn.send_nowait(NodeHello(node_id, "sim", slots, 64 << 30, slots, provider="sim"))
    welcome = await conn.recv()
    assert isinstance(welcome, Welcome), welcome
    registered.set()
    await SimNode(conn, node_id).serve()


async def main(args: argparse.Namespace) -> None:
    host, port = args.head.rsplit(":", 1)
    t0 = time.perf_counter()
    events = [asyncio.Event() for _ in range(args.nodes)]
    address, transport = (host, int(port)), TransportConfig()
    tasks = [asyncio.create_task(run_node(address, args.token, f"{args.prefix}{i}", args.slots, events[i], transport))
             for i in range(args.nodes)]
    await asyncio.gather(*(e.wait() for e in events))
    print(f"REGISTERED {time.perf_counter() - t0:.3f}", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("head")
    p.add_argument("token")
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--slots", type=int, default=10)
    p.add_argument("--prefix", default="sim")
    _loop.raise_fd_limit()
    _loop.run(main(p.parse_args()))
