"""The local provider: a head and node daemons as processes on this machine.

``start_local_cluster`` binds the head's ports itself and hands the
listening sockets to the head process, so clients and nodes can connect
while the head is still importing (the kernel queues them): starting a
cluster costs one process start, not two in series.

Processes start in ``/`` so that, as on a remote machine, workers cannot
import the user's local modules from a shared working directory (burla ships
those by value).

With ``attached=True`` (the embedded cluster) every process gets the read end
of a lifeline pipe and exits as soon as this process dies, however it dies.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import psutil

from .._config import ClusterRecord, config_dir
from ..transport._address import listen_backlog
from ._provider import Resource, node_resources
from ._recipes import DAEMON_MALLOC_ENV, head_args, node_args, python_burla
from ._spec import ClusterName, NodeCount, QueueSpec, WorkersPerNode


class LocalProviderSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="local", tag_field="type"):
    pass


class LocalClusterSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: ClusterName = "local"
    provider: LocalProviderSpec = LocalProviderSpec()
    nodes: NodeCount = 1
    workers_per_node: WorkersPerNode | None = None
    queue: QueueSpec = QueueSpec()

    def __post_init__(self) -> None:
        if self.queue.type == "redis" and not self.queue.url:
            raise ValueError("queue: a local cluster uses your Redis: give its url, "
                             "e.g. queue: {type: redis, url: redis://127.0.0.1:6379/0}")


@dataclass
class LocalCluster:
    record: ClusterRecord
    procs: list[subprocess.Popen[bytes]]
    _lifeline_w: int | None = None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate every process; postcondition: all of them have exited."""
        stop_pids([p.pid for p in self.procs], timeout, self.procs)
        if self._lifeline_w is not None:
            os.close(self._lifeline_w)
            self._lifeline_w = None


NODE_RECONNECT_FOR = 600.0  # seconds a local node keeps trying a head it lost (it dies with an attached parent)


def start_local_cluster(name: str = "burla", nodes: int = 1, workers_per_node: int | None = None,
                        attached: bool = True, log_dir: str | None = None, queue: str = "memory",
                        supervisor: list[str] | None = None) -> LocalCluster:
    """supervisor: options of the ``burla supervise`` the head runs under (the head of a
    detached cluster, made by ``burla up``, always runs under one)."""
    token = secrets.token_urlsafe(32)
    listen = socket.create_server(("127.0.0.1", 0), backlog=listen_backlog())
    http = socket.create_server(("127.0.0.1", 0), backlog=listen_backlog())
    port, http_port = listen.getsockname()[1], http.getsockname()[1]
    env = dict(os.environ, BURLA_TOKEN=token, **DAEMON_MALLOC_ENV)
    env.pop("BURLA_HEAD", None)
    lifeline_r, lifeline_w = os.pipe() if attached else (None, None)
    extra = ["--lifeline-fd", str(lifeline_r)] if attached else []
    keep = (lifeline_r,) if lifeline_r is not None else ()
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], fds: tuple[int, ...], log_name: str) -> None:
        out = open(os.path.join(log_dir, log_name), "ab") if log_dir else None  # noqa: SIM115 (closed below)
        try:
            procs.append(subprocess.Popen(
                python_burla(*args), env=env, pass_fds=fds + keep, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=out or subprocess.DEVNULL, start_new_session=not attached, cwd="/",
            ))
        finally:
            if out is not None:
                out.close()

    try:
        head = head_args(name, listen_fd=listen.fileno(), http_fd=http.fileno(), queue=queue)
        if supervisor is None and not attached:  # a `burla up` cluster: a supervisor restarts a head that crashes
            supervisor = []
        if supervisor is not None:
            head = ["supervise", "--keep-fd", str(listen.fileno()), "--keep-fd", str(http.fileno()), *supervisor,
                    *extra, "--", *head]
        else:
            head += extra
        spawn(head, (listen.fileno(), http.fileno()),
              "head.log")
        for i in range(nodes):
            # A head that pauses (SIGSTOP, a stalled disk) comes back to its nodes: they keep
            # their warm workers and register again, as Docker and GCE nodes do (issue 11).
            spawn([*node_args(f"127.0.0.1:{port}", f"{name}-node-{i}", workers=workers_per_node,
                              reconnect_for=NODE_RECONNECT_FOR), *extra], (), f"node-{i}.log")
    except BaseException:
        stop_pids([p.pid for p in procs], 2.0, procs)
        raise
    finally:
        listen.close()
        http.close()
        if lifeline_r is not None:
            os.close(lifeline_r)
    record = ClusterRecord(name=name, provider="local", head=f"127.0.0.1:{port}", http=f"http://127.0.0.1:{http_port}",
                           token=token, pids=[p.pid for p in procs])
    return LocalCluster(record, procs, lifeline_w)


def stop_pids(pids: list[int], timeout: float = 5.0, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; reap our own children.
    Postcondition: none of ``pids`` runs (a zombie of someone else's counts as gone)."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    by_pid = {p.pid: p for p in procs or []}
    for pid in pids:
        while _alive(pid, by_pid.get(pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid, by_pid.get(pid)):
            _signal(pid, signal.SIGKILL)
            if pid in by_pid:
                by_pid[pid].wait(timeout=5)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


class LocalProvider:
    """``provider: {type: local}``: the daemons are processes of this machine,
    recorded by pid (``burla down`` signals them)."""

    kind: ClassVar[str] = "local"
    spec_type: ClassVar[type[LocalClusterSpec]] = LocalClusterSpec
    spec_hints: ClassVar[dict[str, str]] = {}
    ready_timeout: ClassVar[float] = 30.0

    async def up(self, spec: LocalClusterSpec) -> ClusterRecord:
        log_dir = config_dir() / "logs" / spec.name
        log_dir.mkdir(parents=True, exist_ok=True)
        cluster = await asyncio.to_thread(start_local_cluster, spec.name, spec.nodes, spec.workers_per_node,
                                          attached=False, log_dir=str(log_dir), queue=spec.queue.head_arg())
        return cluster.record

    def placeholder(self, spec: Any) -> ClusterRecord:
        return ClusterRecord(name=spec.name, provider=self.kind)

    async def down(self, name: str, record: ClusterRecord | None) -> int:
        pids = record.pids if record is not None else []
        await asyncio.to_thread(stop_pids, pids)
        return len(pids)

    async def status(self, record: ClusterRecord) -> list[Resource]:
        out = []
        for i, pid in enumerate(record.pids):
            role = "head" if i == 0 else "node"
            state = "running" if _alive(pid, None) else "exited"
            out.append(Resource(f"pid {pid}", role, state))
        return out

    async def nodes(self, record: ClusterRecord) -> list[Resource]:
        return node_resources(await self.status(record))

    async def exists(self, name: str) -> bool:
        return False  # processes carry no label: only the record knows them

    def log_hint(self, record: ClusterRecord) -> str:
        return f"logs in {config_dir() / 'logs' / record.name}"
