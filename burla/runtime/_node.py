"""The node daemon (node service): one per machine; the I/O around ``NodeState``.

Registers with the head, launches workers (processes, or containers with the
Docker provider) and turns every message from the head or a worker, every
worker exit and every watchdog sample into one ``NodeState`` event, then
carries out the commands that come back.  The policy (which worker runs what,
when one is killed or replaced, what the head is told) lives in
``_node_state``; nothing here decides.

A worker's exit is reported only after its connection has been read to the
end, so a result it managed to send is never also retried.  Every task the
daemon starts belongs to its ``TaskRegistry``: stopping cancels and awaits
them, and one that fails stops the daemon with its error.

If the head goes away the node drops the job it had (its results would be
stale) and, when ``reconnect_for`` is set, keeps trying to register again for
that long with its warm workers kept; otherwise it exits with its workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass, field

from .._errors import ClusterUnreachable, ConnectionLost, ProtocolError, ProviderError
from .._retry import retry
from .._tasks import TaskRegistry, first_of
from ..transport import Connection, TransportConfig, connect, serve
from ..transport._tls import client_context
from ..transport.messages import (
    AssignJob,
    InputBatchView,
    Installing,
    JobSetupFailed,
    LogAck,
    LogBatch,
    NodeHello,
    NodeStats,
    Outgoing,
    ReleaseJob,
    RestartNode,
    ResultBatchView,
    Welcome,
    WorkerHello,
)
from . import _status
from ._launch import Launcher, ProcessLauncher, WorkerHandle
from ._node_commands import ApplyLimits, Command, Kill, PrepareEnvironment, Respawn, Spawn, ToHead, ToWorker
from ._node_state import NodeState, WorkerPhase

log = logging.getLogger("burla.node")
WATCH_INTERVAL = 0.2  # seconds between watchdog samples (func_timeout backstop, func_ram of processes)
HEAD_ERRORS = (ConnectionLost, ClusterUnreachable, ProtocolError)
# The first registration is retried this long even when reconnect_for is 0: a head that is still
# importing while a cluster's many workers start on the same CPUs misses the handshake timeout,
# and a node that gave up at once left the cluster short (4 nodes x 25 workers on 2 CPUs: 0-1 of
# 4 nodes registered).
FIRST_REGISTER_GRACE = 30.0


@dataclass(frozen=True)
class NodeConfig:
    """reconnect_for: seconds to keep retrying a lost head (0: exit at once).
    status_dir:    where workers' status files live (shared with them).
    idle_shutdown: seconds without a job after which the daemon exits (a
                   cloud VM then shuts itself down: nothing bills while idle).
    environments:  worker processes: a directory where a job's distributions
                   this interpreter lacks are installed (None: never install).
    """

    n_workers: int | None = None
    node_id: str | None = None
    provider: str = "local"
    reconnect_for: float = 0.0
    status_dir: str | None = None
    idle_shutdown: float = 0.0
    environments: str | None = None
    wheels_only: bool = False  # install only wheels the client ships (no package index reachable)
    head_ca: str = ""  # the head speaks TLS with a certificate of this CA (PEM): a cloud cluster's
    transport: TransportConfig = TransportConfig()  # noqa: RUF009 (frozen: one shared default is safe)


@dataclass
class _Proc:
    """A launched worker as the daemon sees it."""

    status_path: str
    handle: WorkerHandle | None = None  # None while the launcher is starting it
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    kill_asked: bool = False


class NodeDaemon:
    def __init__(self, head_host: str, head_port: int, token: str, config: NodeConfig = NodeConfig(),
                 launcher: Launcher | None = None, worker_listen: tuple[str, int] | None = None) -> None:
        import psutil

        self.head_host, self.head_port, self.token = head_host, head_port, token
        self.config = config
        self.cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.ram = psutil.virtual_memory().total
        self.gpus = _count_gpus()
        self.n_workers = config.n_workers or self.cpus
        self.node_id = config.node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.transport = config.transport
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if config.status_dir:
            os.makedirs(config.status_dir, exist_ok=True)
            self._status_dir = config.status_dir
        else:
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            self._tmp = tempfile.TemporaryDirectory(prefix="burla-node-", dir=shm)
            self._status_dir = self._tmp.name
        self._worker_listen = worker_listen
        self._worker_sock = os.path.join(self._status_dir, "workers.sock")
        # Local workers: a Unix socket skips the TCP stack on every byte of every
        # payload (still authenticated like any other connection).
        self.launcher: Launcher = launcher or ProcessLauncher(f"unix:{self._worker_sock}", token,
                                                                 config.environments, config.wheels_only)
        self.launcher.head_address = f"{head_host}:{head_port}"
        self.launcher.head_ca = config.head_ca
        self._head_tls = client_context(config.head_ca) if config.head_ca else None
        self.state = NodeState(self.node_id, self.n_workers, self.launcher.default_image,
                               prepares_environments=self.launcher.prepares_environments)
        self._procs: dict[int, _Proc] = {}
        self._conns: dict[int, Connection] = {}
        self._head: Connection | None = None
        self._tasks = TaskRegistry(f"node {self.node_id}")
        self._stop = asyncio.Event()
        self._stopping = False
        self._image_dists: dict[str, str] | None = None  # the default workers' distributions (wheels_only)

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until the head is gone for good or ``stop()``; workers die with us.
        A task of the daemon that fails ends this with its error."""
        server = await self._listen_for_workers()
        try:
            self._apply(self.state.start())
            if self.config.idle_shutdown:
                self._tasks.spawn(self._exit_when_idle(self.config.idle_shutdown), "idle-shutdown")
            self._tasks.spawn(self._watchdog(), "watchdog")
            await first_of(self._serve_heads(), self._stop.wait(), self._tasks.failed())
        finally:
            self._stopping = True
            server.close()
            await self._kill_all()  # while their watchers still run: they see the exits
            await self._tasks.close()
            await self.launcher.close()
            if self._tmp is not None:
                self._tmp.cleanup()

    def stop(self) -> None:
        """Ask ``run`` to return (safe from a signal handler)."""
        self._stop.set()

    async def _listen_for_workers(self) -> asyncio.Server:
        if self._worker_listen is not None:  # containers reach us over the cluster network
            host, port = self._worker_listen
            return await serve(host, port, self.token, self._on_worker, self.transport)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._worker_sock)
        listener.listen(128)
        return await serve(None, None, self.token, self._on_worker, self.transport, sock=listener)

    async def _kill_all(self) -> None:
        procs = [p for p in self._procs.values() if p.handle is not None and p.handle.alive]
        for p in procs:
            assert p.handle is not None
            p.handle.kill()
        for p in procs:
            try:
                await asyncio.wait_for(p.exited.wait(), 10)
            except TimeoutError:
                log.error("a worker did not die after being killed")

    async def _exit_when_idle(self, seconds: float) -> None:
        """Idle means registered with no job: a node still reaching for its
        head is governed by ``reconnect_for`` instead."""
        busy_at = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, seconds / 4))
            now = time.monotonic()
            if self.state.jobs or self._head is None:
                busy_at = now
            elif now - busy_at >= seconds:
                log.warning("node %s idle for %gs: exiting", self.node_id, seconds)
                self.stop()
                return

    # --- commands -------------------------------------------------------------------

    def _apply(self, cmds: list[Command]) -> None:
        for cmd in cmds:
            if self._stopping and isinstance(cmd, (Spawn, Respawn, ApplyLimits)):
                continue
            match cmd:
                case ToHead(msg=msg):
                    self._to_head(msg)
                case ToWorker(wid=wid, msg=msg):
                    conn = self._conns.get(wid)
                    if conn is not None and not conn.closed:
                        conn.send_nowait(msg)
                case Spawn():
                    self._tasks.spawn(self._spawn(cmd), f"spawn-{cmd.wid}")
                case Respawn(delay=delay):
                    self._tasks.spawn(self._respawn_after(delay), "respawn")
                case ApplyLimits():
                    self._tasks.spawn(self._apply_limits(cmd), f"limits-{cmd.wid}")
                case Kill(wid=wid):
                    self._kill(wid)
                case PrepareEnvironment():
                    self._tasks.spawn(self._prepare_environment(cmd), f"environment-{cmd.job_id}")

    def _to_head(self, msg: Outgoing) -> None:
        if self._head is not None and not self._head.closed:
            self._head.send_nowait(msg)

    def _kill(self, wid: int) -> None:
        proc = self._procs.get(wid)
        if proc is None:
            return
        proc.kill_asked = True
        if proc.handle is not None:
            proc.handle.kill()

    # --- workers --------------------------------------------------------------------

    async def _spawn(self, cmd: Spawn) -> None:
        path = os.path.join(self._status_dir, f"w{cmd.wid}")
        _status.create(path)
        proc = self._procs[cmd.wid] = _Proc(path)
        try:
            proc.handle = await self.launcher.start(cmd.wid, path, cmd.image, cmd.gpus)
        except ProviderError as e:
            del self._procs[cmd.wid]
            _status.remove(path)
            self._apply(self.state.spawn_failed(cmd.wid, str(e)))
            return
        if proc.kill_asked:
            proc.handle.kill()
        self._tasks.spawn(self._watch_exit(cmd.wid, proc), f"worker-{cmd.wid}")

    async def _respawn_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._apply(self.state.replace_worker())

    async def _prepare_environment(self, cmd: PrepareEnvironment) -> None:
        loop = asyncio.get_running_loop()
        told: list[str] = []  # what the launcher said it installs (the head tells the client)

        def progress(what: str) -> None:  # (in the launcher's thread)
            told.append(what)
            loop.call_soon_threadsafe(self._to_head, Installing(cmd.job_id, what))

        try:
            path = await asyncio.to_thread(self.launcher.prepare_environment, cmd.image, cmd.assign, progress)
        except (ProviderError, OSError) as e:
            self._apply(self.state.environment_failed(cmd.job_id, str(e)))
            return
        if told:
            self._to_head(Installing(cmd.job_id, told[-1], done=True))
        self._apply(self.state.environment_ready(cmd.job_id, path))

    async def _apply_limits(self, cmd: ApplyLimits) -> None:
        proc = self._procs.get(cmd.wid)
        ok = proc is not None and proc.handle is not None
        if ok:
            assert proc is not None and proc.handle is not None
            try:
                await self.launcher.set_limits(proc.handle, cmd.func_cpu, cmd.func_ram, cmd.func_gpu)
            except (ProviderError, OSError) as e:  # the container vanished meanwhile: its exit replaces it
                log.warning("could not apply limits to worker %d: %s", cmd.wid, e)
                ok = False
        self._apply(self.state.limits_applied(cmd.wid, cmd.job_id, ok))

    async def _watch_exit(self, wid: int, proc: _Proc) -> None:
        """Wait for the worker's exit.  One that never connected is reported
        here; a connected one by its connection's reader (``_on_worker``)."""
        assert proc.handle is not None
        await proc.handle.wait()
        proc.exited.set()
        slot = self.state.workers.get(wid)
        if slot is not None and slot.phase is WorkerPhase.STARTING and not self._stopping:
            self._procs.pop(wid, None)
            _status.remove(proc.status_path)
            self._apply(self.state.worker_exited(wid, proc.handle.exit_reason))

    async def _on_worker(self, conn: Connection) -> None:
        hello = await conn.recv()
        if not isinstance(hello, WorkerHello):
            raise ProtocolError(f"a worker opened with {type(hello).__name__}")
        wid = hello.worker_id
        try:
            cmds = self.state.worker_hello(wid)
        except KeyError:
            raise ProtocolError(f"unexpected worker hello {hello!r}") from None
        self._conns[wid] = conn
        self._apply(cmds)
        try:
            while True:
                match await conn.recv():
                    case ResultBatchView() as rb:
                        self._apply(self.state.worker_result(wid, rb))
                    case LogBatch() as logs:
                        self._apply(self.state.worker_logs(wid, logs))
                    case JobSetupFailed() as failed:
                        self._apply(self.state.worker_setup_failed(wid, failed))
                    case other:
                        raise ProtocolError(f"worker sent {type(other).__name__}")
        except (ConnectionLost, ProtocolError):
            pass
        finally:
            self._conns.pop(wid, None)
            self._apply(self.state.worker_disconnected(wid))
            await self._reap(wid)

    async def _reap(self, wid: int) -> None:
        """The worker's connection ended: make sure it is dead, then report it."""
        proc = self._procs.get(wid)
        if proc is None:
            return
        self._kill(wid)
        await proc.exited.wait()
        self._procs.pop(wid, None)
        if self._stopping:
            return
        crashed = _status.read(proc.status_path)[0]
        _status.remove(proc.status_path)
        assert proc.handle is not None
        self._apply(self.state.worker_exited(wid, proc.handle.exit_reason, crashed))

    async def _watchdog(self) -> None:
        """Sample the job's calls: how long each has run (the func_timeout
        backstop) and, for worker processes, their RSS (func_ram)."""
        import psutil

        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            for wid, job in self.state.serving():
                if not (job.assign.func_timeout or job.assign.func_ram):
                    continue
                proc = self._procs.get(wid)
                if proc is None or proc.handle is None or not proc.handle.alive:
                    continue
                if job.assign.func_timeout:
                    index, started = _status.read(proc.status_path)
                    self._apply(self.state.call_running(wid, index, now - started))
                if job.assign.func_ram and proc.handle.pid is not None:  # containers: the cgroup enforces it
                    try:
                        rss = psutil.Process(proc.handle.pid).memory_info().rss
                    except psutil.Error:
                        continue
                    self._apply(self.state.memory_used(wid, rss))

    # --- head -----------------------------------------------------------------------

    async def _serve_heads(self) -> None:
        """Register (the first time for at least FIRST_REGISTER_GRACE seconds), serve,
        and on a lost head try again for ``reconnect_for`` seconds."""
        deadline = max(self.config.reconnect_for, FIRST_REGISTER_GRACE)
        while True:
            try:
                head = await retry(self._register, retry_on=HEAD_ERRORS, deadline=deadline,
                                   what=f"node {self.node_id}: registering")
            except HEAD_ERRORS as e:
                log.warning("node %s: head gone (%s); exiting", self.node_id, e)
                return
            try:
                await self._serve_head(head)
            except HEAD_ERRORS as e:
                log.warning("node %s: lost the head (%s)", self.node_id, e)
            finally:
                head.abort()
                self._head = None
                self._apply(self.state.release())  # results for the old session would be stale
            if not self.config.reconnect_for:
                log.warning("node %s: head gone; exiting", self.node_id)
                return
            deadline = self.config.reconnect_for

    async def _register(self) -> Connection:
        if self.launcher.wheels_only and self._image_dists is None:  # (once: clients diff against it)
            self._image_dists = await asyncio.to_thread(self.launcher.image_distributions)
        head = await connect(self.head_host, self.head_port, self.token, self.transport, self._head_tls)
        try:
            head.send_nowait(NodeHello(self.node_id, socket.gethostname(), self.cpus, self.ram, self.n_workers,
                                       provider=self.config.provider, runtime=self.launcher.runtime,
                                       gpus=self.gpus, environments=self.launcher.prepares_environments,
                                       wheels_only=self.launcher.wheels_only,
                                       image_distributions=self._image_dists or {}))
            welcome = await head.recv()
            if not isinstance(welcome, Welcome):
                raise ProtocolError(f"head answered {type(welcome).__name__} to NodeHello")
        except BaseException:
            head.abort()
            raise
        log.info("node %s registered with cluster %r", self.node_id, welcome.cluster)
        self._head = head
        self._tasks.spawn(self._report_stats(head), "stats")
        return head

    async def _serve_head(self, head: Connection) -> None:
        while True:
            match await head.recv():
                case AssignJob() as assign:
                    self._apply(self.state.assign(assign))
                case InputBatchView() as batch:
                    self._apply(self.state.batch(batch))
                case ReleaseJob(job_id=job_id):
                    self._apply(self.state.release(job_id))
                case LogAck() as ack:
                    self._apply(self.state.log_ack(ack))
                case RestartNode():
                    self._apply(self.state.restart())
                case other:
                    raise ProtocolError(f"head sent {type(other).__name__}")

    async def _report_stats(self, head: Connection) -> None:
        """CPU/RAM of this machine for the dashboard, once a second."""
        import psutil

        psutil.cpu_percent()
        while not head.closed:
            await asyncio.sleep(1.0)
            vm = psutil.virtual_memory()
            if not head.closed:
                head.send_nowait(NodeStats(psutil.cpu_percent(), vm.total - vm.available, vm.total))


def _count_gpus() -> int:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))
