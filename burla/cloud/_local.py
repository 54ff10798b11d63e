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

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ClusterRecord:
    """What ``burla up`` writes to the config directory (and ``burla down`` reads)."""

    name: str
    head: str  # host:port
    http: str  # http://host:port
    token: str
    provider: str = "local"
    pids: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific (project, zones...)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


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


# glibc serves allocations over 128 KiB-32 MiB with fresh mmap()s and gives
# them back on free, so every 1 MiB payload a daemon receives would page-fault
# 256 fresh pages.  Keeping such buffers on the heap makes them reusable; the
# daemons' memory stays bounded by their credit windows anyway (issue #3).
DAEMON_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def _burla_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "burla", *args]


def start_local_cluster(name: str = "burla", nodes: int = 1, workers_per_node: int | None = None,
                        attached: bool = True, log_dir: str | None = None) -> LocalCluster:
    token = secrets.token_urlsafe(32)
    listen = socket.create_server(("127.0.0.1", 0), backlog=128)
    http = socket.create_server(("127.0.0.1", 0), backlog=128)
    port, http_port = listen.getsockname()[1], http.getsockname()[1]
    env = dict(os.environ, BURLA_TOKEN=token, **DAEMON_MALLOC_ENV)
    env.pop("BURLA_HEAD", None)
    lifeline_r, lifeline_w = os.pipe() if attached else (None, None)
    extra = ["--lifeline-fd", str(lifeline_r)] if attached else []
    keep = (lifeline_r,) if attached else ()
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], fds: tuple[int, ...], log_name: str) -> None:
        out = open(os.path.join(log_dir, log_name), "ab") if log_dir else subprocess.DEVNULL
        procs.append(subprocess.Popen(
            _burla_cmd(*args, *extra), env=env, pass_fds=fds + keep, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=out, start_new_session=not attached, cwd="/",
        ))
        if log_dir:
            out.close()  # type: ignore[union-attr]

    try:
        spawn(["head", "--name", name, "--listen-fd", str(listen.fileno()), "--http-fd", str(http.fileno())],
              (listen.fileno(), http.fileno()), "head.log")
        for i in range(nodes):
            args = ["node", "--head", f"127.0.0.1:{port}", "--node-id", f"{name}-node-{i}"]
            if workers_per_node:
                args += ["--workers", str(workers_per_node)]
            spawn(args, (), f"node-{i}.log")
    except BaseException:
        stop_pids([p.pid for p in procs], 2.0, procs)
        raise
    finally:
        listen.close()
        http.close()
        if lifeline_r is not None:
            os.close(lifeline_r)
    record = ClusterRecord(name, f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}", token, "local",
                           [p.pid for p in procs])
    return LocalCluster(record, procs, lifeline_w)


def stop_pids(pids: list[int], timeout: float = 5.0, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; reap our own children."""
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
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of someone else's counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True
