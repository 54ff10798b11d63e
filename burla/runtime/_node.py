"""The node daemon (node service): one per machine.

Registers with the head, keeps ``n_workers`` warm worker processes, gives a
job the workers it asks for, routes input batches to them, watches them, and
replaces a worker that dies.  A worker that dies holding batches is reported
to the head batch by batch (``BatchLost``) only after its connection has been
read to the end, so a result it managed to send is never also retried.

After each job the workers are reset in place (``EndJob``); a worker still
running a call when its job ends (cancel, failure) is killed and replaced.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import secrets
import signal
import socket
import struct
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field

from .._errors import ConnectionLost, ProtocolError
from ..transport import Connection, TransportConfig, connect, serve
from ..transport.messages import (
    AssignJob,
    BatchAssigned,
    BatchLost,
    EndJob,
    InputBatchView,
    JobSetupFailed,
    LogBatch,
    NodeHello,
    NodeStats,
    ReleaseJob,
    RestartNode,
    ResultBatchView,
    StartJob,
    Welcome,
    WorkerHello,
)

log = logging.getLogger("burla.node")
_STATUS = struct.Struct("<q")


@dataclass
class _Worker:
    wid: int
    status_path: str
    proc: asyncio.subprocess.Process | None = None
    conn: Connection | None = None
    job_id: str | None = None
    outstanding: deque[InputBatchView] = field(default_factory=deque)
    kill_reason: str | None = None

    def running_index(self) -> int:
        with open(self.status_path, "rb") as f:
            return _STATUS.unpack(f.read(_STATUS.size))[0]


@dataclass
class _Job:
    assign: AssignJob
    pending: deque[InputBatchView] = field(default_factory=deque)


class NodeDaemon:
    def __init__(self, head_host: str, head_port: int, token: str, n_workers: int | None = None,
                 node_id: str | None = None, transport: TransportConfig = TransportConfig(), provider: str = "local"):
        import psutil

        self.head_host, self.head_port, self.token = head_host, head_port, token
        self.cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.ram = psutil.virtual_memory().total
        self.n_workers = n_workers or self.cpus
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.transport = transport
        self.provider = provider
        self.workers: dict[int, _Worker] = {}
        self.job: _Job | None = None
        self._head: Connection | None = None
        self._worker_address = ""
        self._next_wid = 0
        self._stopping = False
        self._tmp = tempfile.TemporaryDirectory(prefix="burla-node-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self._tasks: set[asyncio.Task[None]] = set()
        self._main_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the head goes away (or ``stop``); workers die with us."""
        self._main_task = asyncio.current_task()
        # Workers are local: a Unix socket skips the TCP stack on every byte
        # of every payload (still authenticated like any other connection).
        self._worker_address = os.path.join(self._tmp.name, "workers.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._worker_address)
        listener.listen(128)
        server = await serve(None, None, self.token, self._on_worker, self.transport, sock=listener)
        try:
            for _ in range(self.n_workers):
                await self._spawn()
            self._head = await connect(self.head_host, self.head_port, self.token, self.transport)
            self._head.send_nowait(NodeHello(self.node_id, socket.gethostname(), self.cpus, self.ram, self.n_workers,
                                             provider=self.provider))
            welcome = await self._head.recv()
            if not isinstance(welcome, Welcome):
                raise ProtocolError(f"head answered {type(welcome).__name__} to NodeHello")
            log.info("node %s registered with cluster %r", self.node_id, welcome.cluster)
            self._track(self._report_stats())
            await self._serve_head(self._head)
        except ConnectionLost as e:
            log.warning("node %s: head connection lost: %s", self.node_id, e)
        except asyncio.CancelledError:
            pass  # stop()
        finally:
            self._stopping = True
            server.close()
            await self._kill_all()
            self._tmp.cleanup()

    async def _kill_all(self) -> None:
        procs = [w.proc for w in self.workers.values() if w.proc and w.proc.returncode is None]
        for proc in procs:
            proc.kill()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                log.error("worker pid %d did not die after SIGKILL", proc.pid)

    def stop(self) -> None:
        if self._main_task is not None:
            self._main_task.cancel()

    # --- workers --------------------------------------------------------------------

    async def _spawn(self) -> None:
        wid = self._next_wid
        self._next_wid += 1
        path = os.path.join(self._tmp.name, f"w{wid}")
        with open(path, "wb") as f:
            f.write(_STATUS.pack(-1))
        w = _Worker(wid, path)
        self.workers[wid] = w
        env = dict(os.environ, BURLA_TOKEN=self.token, PYTHONUNBUFFERED="1")
        w.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "burla.runtime._worker", "--node", f"unix:{self._worker_address}",
            "--worker-id", str(wid), "--status-file", path, env=env, stdin=asyncio.subprocess.DEVNULL,
        )
        self._track(self._watch_process(w))

    def _track(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_process(self, w: _Worker) -> None:
        """A worker that exits before connecting is replaced too."""
        assert w.proc is not None
        await w.proc.wait()
        if w.conn is None and not self._stopping and self.workers.get(w.wid) is w:
            log.warning("worker %d exited (%s) before connecting; replacing it", w.wid, _exit_reason(w))
            del self.workers[w.wid]
            os.unlink(w.status_path)
            await self._spawn()

    async def _on_worker(self, conn: Connection) -> None:
        hello = await conn.recv()
        if not isinstance(hello, WorkerHello) or hello.worker_id not in self.workers:
            raise ProtocolError(f"unexpected worker hello {hello!r}")
        w = self.workers[hello.worker_id]
        w.conn = conn
        self._give_job(w)
        try:
            while True:
                match await conn.recv():
                    case ResultBatchView() as rb:
                        if w.outstanding and w.outstanding[0].start == rb.start:
                            w.outstanding.popleft()
                            self._to_head(rb)
                    case LogBatch() as logs:
                        self._to_head(logs)
                    case JobSetupFailed() as failed:
                        self._to_head(failed)
                    case other:
                        raise ProtocolError(f"worker sent {type(other).__name__}")
        except (ConnectionLost, ProtocolError):
            pass
        finally:
            await self._worker_gone(w)

    async def _worker_gone(self, w: _Worker) -> None:
        assert w.proc is not None
        if w.proc.returncode is None:
            w.proc.kill()
        await w.proc.wait()
        self.workers.pop(w.wid, None)
        if self._stopping:
            return
        reason = w.kill_reason or _exit_reason(w)
        crashed = w.running_index()
        os.unlink(w.status_path)
        for batch in w.outstanding:
            inside = batch.start <= crashed < batch.start + len(batch.ends)
            self._to_head(BatchLost(batch.job_id, batch.start, crashed if inside else -1, reason))
        if w.outstanding:
            log.warning("worker %d died holding %d batch(es): %s", w.wid, len(w.outstanding), reason)
        await self._spawn()

    def _give_job(self, w: _Worker) -> None:
        """Attach an idle, connected worker to the current job if it needs one."""
        job = self.job
        if job is None or w.conn is None or w.job_id is not None:
            return
        if sum(1 for x in self.workers.values() if x.job_id == job.assign.job_id) >= job.assign.n_workers:
            return
        w.job_id = job.assign.job_id
        w.conn.send_nowait(StartJob(job.assign.job_id, job.assign.function, job.assign.func_timeout))
        while job.pending:
            self._route(job.pending.popleft())

    def _route(self, batch: InputBatchView) -> None:
        mine = [w for w in self.workers.values() if w.job_id == batch.job_id and w.conn and not w.conn.closed]
        if not mine:
            assert self.job is not None
            self.job.pending.append(batch)
            return
        w = min(mine, key=lambda x: len(x.outstanding))
        w.outstanding.append(batch)
        w.conn.send_nowait(batch)  # type: ignore[union-attr]
        self._to_head(BatchAssigned(batch.job_id, batch.start, w.wid))

    # --- head -----------------------------------------------------------------------

    def _to_head(self, msg: object) -> None:
        if self._head is not None and not self._head.closed:
            self._head.send_nowait(msg)  # type: ignore[arg-type]

    async def _serve_head(self, head: Connection) -> None:
        while True:
            match await head.recv():
                case AssignJob() as assign:
                    self._release()
                    self.job = _Job(assign)
                    if assign.func_ram:
                        self._track(self._watch_memory(assign.job_id, assign.func_ram))
                    for w in list(self.workers.values()):
                        self._give_job(w)
                case InputBatchView() as batch:
                    if self.job and self.job.assign.job_id == batch.job_id:
                        self._route(batch)
                case ReleaseJob(job_id=job_id):
                    if self.job and self.job.assign.job_id == job_id:
                        self._release()
                case RestartNode():
                    self._release()
                    for w in list(self.workers.values()):
                        w.kill_reason = "node restarted"
                        if w.proc and w.proc.returncode is None:
                            w.proc.kill()
                case other:
                    raise ProtocolError(f"head sent {type(other).__name__}")

    def _release(self) -> None:
        """End the current job here: reset idle workers, kill busy ones."""
        if self.job is None:
            return
        job_id = self.job.assign.job_id
        self.job = None
        for w in self.workers.values():
            if w.job_id != job_id:
                continue
            w.job_id = None
            if w.outstanding:
                w.outstanding.clear()  # the head has already requeued or dropped them
                w.kill_reason = "job ended while it was running"
                if w.proc and w.proc.returncode is None:
                    w.proc.kill()
            elif w.conn is not None and not w.conn.closed:
                w.conn.send_nowait(EndJob(job_id))

    async def _report_stats(self) -> None:
        """CPU/RAM of this machine for the dashboard, once a second."""
        import psutil

        psutil.cpu_percent()
        while True:
            await asyncio.sleep(1.0)
            vm = psutil.virtual_memory()
            self._to_head(NodeStats(psutil.cpu_percent(), vm.total - vm.available, vm.total))

    async def _watch_memory(self, job_id: str, limit: int) -> None:
        """Enforce func_ram: a worker whose RSS exceeds it is killed (its input
        is then retried, and fails the job with WorkerCrashed if it keeps doing so)."""
        import psutil

        while self.job is not None and self.job.assign.job_id == job_id:
            for w in list(self.workers.values()):
                if w.job_id != job_id or w.proc is None or w.proc.returncode is not None:
                    continue
                try:
                    rss = psutil.Process(w.proc.pid).memory_info().rss
                except psutil.Error:
                    continue
                if rss > limit:
                    w.kill_reason = f"used {rss / 2**20:.0f} MiB, over func_ram={limit / 2**20:.0f} MiB"
                    w.proc.kill()
            await asyncio.sleep(0.2)


def _exit_reason(w: _Worker) -> str:
    code = w.proc.returncode if w.proc else None
    if code is None:
        return "worker connection lost"
    if code < 0:
        name = signal.Signals(-code).name
        extra = " (killed: possibly out of memory)" if name == "SIGKILL" else ""
        return f"worker died from {name}{extra}"
    return f"worker exited with code {code} (os._exit or sys.exit outside the call?)"
