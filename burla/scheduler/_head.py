"""The head (main service): one per cluster.

Accepts authenticated connections from clients and node daemons, turns each
message into a ``HeadState`` event and sends the commands that come out.
Sends never wait here (``send_nowait``): the amounts are bounded by the
credit windows of ``HeadState``, so the head's memory stays bounded while
no connection can stall another.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import ConnectionLost, ProtocolError
from ..transport import Connection, TransportConfig, serve
from ..transport._address import listen_backlog
from ..transport.messages import (
    PROTOCOL_VERSION,
    AttachJob,
    BatchAssigned,
    BatchLost,
    CancelJob,
    ClientHello,
    InputBatch,
    InputBatchView,
    InputsDone,
    Installing,
    JobEnded,
    JobEndedAck,
    JobInfo,
    JobSetupFailed,
    LogAck,
    LogBatch,
    NodeHello,
    NodeStats,
    Outgoing,
    QueryJob,
    ResultAck,
    ResultBatchView,
    ResumeJob,
    SubmitJob,
    Welcome,
)
from ._journal import Journal
from ._monitor import Monitor
from ._restore import DamagedJob, restored
from ._state import Command, HeadConfig, HeadState, NodeState, ToClient, ToNode
from ._view import NodeInfo, cluster_summary
from .backends import QueueBackend, open_backend

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("burla.head")


class NodeWatcher(Protocol):
    """Told when nodes come and go (e.g. a provider that deletes lost VMs)."""

    def node_joined(self, node_id: str) -> None: ...
    def node_lost(self, node_id: str) -> None: ...


@dataclass(frozen=True)
class HeadAddress:
    host: str
    port: int
    http_port: int


class Head:
    def __init__(self, token: str, name: str = "burla", config: HeadConfig = HeadConfig(),
                 transport: TransportConfig = TransportConfig(), node_watcher: NodeWatcher | None = None,
                 tls: ssl.SSLContext | None = None, backend: QueueBackend | None = None):
        self.token = token
        self.tls = tls  # a cloud cluster's head: TLS on both ports (transport/_tls.py)
        self.name = name
        self.state = HeadState(config)
        self.backend = backend if backend is not None else open_backend()
        self.state.durable = self.backend.durable
        self.journal = Journal(self.backend, self._send_all, self._fail_all)
        self.transport = transport
        self.started_at = time.time()
        self.monitor = Monitor()
        self.node_watcher = node_watcher
        self.node_info: dict[str, NodeInfo] = {}
        self._clients: dict[str, Connection] = {}
        self._nodes: dict[str, Connection] = {}
        self._wheel_image: dict[str, str] | None = None  # what workers of wheels-only nodes have
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._http_task: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0, http_port: int | None = 0) -> HeadAddress:
        """Listen; returns once both ports are bound (HTTP may finish loading after)."""
        listen = socket.create_server((host, port), backlog=listen_backlog())
        http = socket.create_server((host, http_port), backlog=listen_backlog()) if http_port is not None else None
        return await self.start_on(listen, http)

    async def start_on(self, listen: socket.socket, http: socket.socket | None) -> HeadAddress:
        """Serve on sockets that are already bound and listening (a parent may
        bind them so that clients can connect before this process is up)."""
        await self.backend.open()
        await self._restore_jobs()
        self.journal.start()
        self._server = await serve(None, None, self.token, self._on_connection, self.transport, sock=listen,
                                   tls=self.tls)
        host, port = listen.getsockname()[:2]
        if http is not None:
            self._http_task = asyncio.get_running_loop().create_task(self._start_http(http))
        self._tick_task = asyncio.get_running_loop().create_task(self._tick())
        return HeadAddress(host, port, http.getsockname()[1] if http else 0)

    async def _restore_jobs(self) -> None:
        """Jobs a previous head of this cluster left in a durable backend: queued again, to
        run once their clients resume them (``HeadState.resume``)."""
        if not self.backend.durable:
            return
        now = time.monotonic()
        for job_id in await self.backend.job_ids():
            stored = await self.backend.load(job_id)
            if stored is None:
                continue
            try:
                job = restored(stored)
            except DamagedJob as e:
                log.error("dropping a job a previous head left, which cannot be read back: %s", e)
                await self.backend.delete_job(job_id)
                continue
            self._run(self.state.restore(job, now))
            self.monitor.submitted(job.spec, "(restored)")
            log.warning("job %s restored from %s: %d of %s inputs done, %d queued again; waiting for its client",
                        job_id, self.backend.where, job.delivered, job.total if job.total is not None else "?",
                        sum(len(b.ends) for b in job.queue))

    async def _start_http(self, sock: socket.socket) -> None:
        from ._http import start_http  # aiohttp is slow to import: keep it off the start-up path

        self._http_runner = await start_http(self, self.token, sock, self.tls)

    async def stop(self) -> None:
        if self._tick_task:
            self._tick_task.cancel()
        if self._server:
            self._server.close()
        for conn in list(self._clients.values()) + list(self._nodes.values()):
            conn.abort()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        await self.journal.stop()
        await self.backend.close()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._run(self.state.tick(time.monotonic()))

    # --- connections ------------------------------------------------------------

    async def _on_connection(self, conn: Connection) -> None:
        hello = await conn.recv()
        match hello:
            case ClientHello(version=v) if v == PROTOCOL_VERSION:
                await self._serve_client(conn)
            case NodeHello(version=v) if v == PROTOCOL_VERSION:
                await self._serve_node(conn, hello)
            case ClientHello() | NodeHello():
                raise ProtocolError(f"{conn.peer} speaks protocol {hello.version}, head speaks {PROTOCOL_VERSION}")
            case _:
                raise ProtocolError(f"{conn.peer} opened with {type(hello).__name__}")

    async def _serve_client(self, conn: Connection) -> None:
        client_id = f"c{next(self._ids)}"
        self._clients[client_id] = conn
        environments = any(n.environments for n in self.state.nodes.values())
        conn.send_nowait(Welcome(self.name, self.state.pool.slots, environments, self._wheel_image is not None,
                                 self._wheel_image or {}, self.backend.durable))
        try:
            while True:
                match await conn.recv():
                    case SubmitJob() as spec:
                        if spec.job_id not in self.state.jobs:
                            self.monitor.submitted(spec, conn.peer)
                        self._run(self.state.submit(client_id, spec, time.monotonic()))
                    case InputBatchView() as batch:
                        self.monitor.received(batch.job_id, len(batch.ends))
                        self._run(self.state.input_batch(client_id, batch))
                    case InputsDone(job_id=job_id, total=total):
                        self.monitor.inputs_done(job_id, total)
                        self._run(self.state.inputs_done(client_id, job_id, total))
                    case ResultAck(job_id=job_id, batches=n):
                        self._run(self.state.result_ack(client_id, job_id, n))
                    case LogAck(job_id=job_id, batches=n):
                        self._run(self.state.log_ack(client_id, job_id, n))
                    case ResumeJob(job_id=job_id, results_held=held):
                        self._run(self.state.resume(client_id, job_id, held))
                    case JobEndedAck(job_id=job_id):
                        self._run(self.state.ended_ack(client_id, job_id))
                    case AttachJob(job_id=job_id, held=held):
                        self._run(self.state.attach(client_id, job_id, held))
                    case QueryJob(job_id=job_id):
                        conn.send_nowait(self.state.query(job_id))
                    case CancelJob(job_id=job_id, reason=reason):
                        if self.state.may_cancel(client_id, job_id):
                            self._run(self.state.cancel(job_id, reason))
                    case other:
                        raise ProtocolError(f"client {conn.peer} sent {type(other).__name__}")
        finally:
            del self._clients[client_id]
            self._run(self.state.client_left(client_id))

    async def _serve_node(self, conn: Connection, hello: NodeHello) -> None:
        node_id = hello.node_id
        old = self._nodes.get(node_id)
        if old is not None and not old.closed:
            # A peer must not evict a live node by reusing its id; a node that really
            # restarted gets in once its old connection is seen closed or silent.
            raise ProtocolError(f"node id {node_id!r} is registered already (from {old.peer})")
        if old is not None:
            self._nodes.pop(node_id)
            self._run(self.state.node_left(node_id))
        self._nodes[node_id] = conn
        info = self.node_info[node_id] = NodeInfo(conn.peer, hello.provider, time.time(), time.time())
        conn.send_nowait(Welcome(self.name))
        if hello.wheels_only:  # clients ship wheels of what these workers lack
            self._wheel_image = hello.image_distributions
        log.info("node %s joined from %s (%d CPUs, %d workers)", node_id, conn.peer, hello.cpus, hello.n_workers)
        if self.node_watcher is not None:
            self.node_watcher.node_joined(node_id)
        self._run(self.state.node_joined(NodeState(node_id, hello.host, hello.cpus, hello.ram_bytes, hello.n_workers,
                                                   hello.runtime, hello.gpus, hello.environments)))
        try:
            while True:
                msg = await conn.recv()
                info.last_seen = time.time()
                match msg:
                    case ResultBatchView() as rb:
                        self._run(self.state.result(node_id, rb))
                    case LogBatch() as logs:
                        if logs.job_id in self.state.jobs:
                            self.monitor.logs(logs)
                        self._run(self.state.logs(node_id, logs))
                    case BatchAssigned(job_id=job_id, start=start, worker_id=worker):
                        self.monitor.assigned(job_id, start, worker)
                    case NodeStats() as stats:
                        info.stats = stats
                    case BatchLost(job_id=job_id, start=start, crashed_index=crashed, reason=reason):
                        if (job_id, start) in self.state.nodes[node_id].inflight:
                            self.monitor.lost(job_id, start, crashed)
                        self._run(self.state.batch_lost(node_id, job_id, start, crashed, reason))
                    case JobSetupFailed(job_id=job_id, message=message, kind=kind):
                        self._run(self.state.job_setup_failed(job_id, message, kind))
                    case Installing(job_id=job_id, what=what, done=done):
                        self._run(self.state.installing(node_id, job_id, what, done, time.monotonic()))
                    case other:
                        raise ProtocolError(f"node {conn.peer} sent {type(other).__name__}")
        except (ConnectionLost, ProtocolError) as e:
            log.warning("node %s lost: %s", node_id, e)
            raise
        finally:
            if self._nodes.get(node_id) is conn:
                del self._nodes[node_id]
                self.node_info.pop(node_id, None)
                self.monitor.node_lost(node_id)
                if self.node_watcher is not None:
                    self.node_watcher.node_lost(node_id)
                self._run(self.state.node_left(node_id))

    # --- the view the HTTP layer is given (_view.HeadView) -------------------------

    def cluster_summary(self) -> dict[str, Any]:
        return cluster_summary(self.name, self.started_at, self.state, self.node_info, self.backend.where)

    def job_info(self, job_id: str) -> JobInfo:
        return self.state.query(job_id)

    def cancel_job(self, job_id: str, reason: str) -> bool:
        if job_id not in self.state.jobs:
            return False
        self._run(self.state.cancel(job_id, reason))
        return True

    def restart_node(self, node_id: str) -> bool:
        if node_id not in self.state.nodes:
            return False
        self.monitor.node_lost(node_id)
        self._run(self.state.restart_node(node_id))
        return True

    # --- commands ---------------------------------------------------------------

    def _run(self, cmds: list[Command]) -> None:
        """Send what an event produced, once the queue backend holds what it noted (_journal)."""
        self.journal.submit(self.state.take_facts(), cmds)

    def _fail_all(self, why: str) -> list[Command]:
        cmds = self.state.fail_all(why)
        self.state.take_facts()  # the backend is gone: nothing more is written to it
        return cmds

    def _send_all(self, cmds: list[Command]) -> None:
        for cmd in cmds:
            msg = cmd.msg
            if isinstance(cmd, ToClient):
                if isinstance(msg, ResultBatchView):
                    self.monitor.result(msg.job_id, msg.start, len(msg.ends), msg.errors, msg.durations)
                elif isinstance(msg, JobEnded):
                    self.monitor.ended(msg.job_id, msg.status, msg.error)
                self._send_client(cmd.client_id, msg)
            else:
                if isinstance(msg, InputBatchView | InputBatch):
                    self.monitor.dispatched(msg.job_id, cmd.node_id, msg.start, len(msg.ends))
                self._send_node(cmd)

    def _send_client(self, client_id: str, msg: Outgoing) -> None:
        conn = self._clients.get(client_id)
        if conn is not None and not conn.closed:
            conn.send_nowait(msg)

    def _send_node(self, cmd: ToNode) -> None:
        conn = self._nodes.get(cmd.node_id)
        if conn is not None and not conn.closed:
            conn.send_nowait(cmd.msg)
