"""How a node daemon starts workers: the ``Launcher`` seam, and worker
processes (``ProcessLauncher``).  Worker containers are the Docker
provider's launcher (``cloud/docker/_launcher.py``).

A launcher returns a ``WorkerHandle``: ``kill()`` it, ``await wait()`` for
its exit (once), then read ``exit_reason``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from ..transport.messages import AssignJob
from ._environments import Environments, ProcessInstaller, requirements


def worker_args(node_address: str, wid: int, status_file: str) -> list[str]:
    """How every worker starts, after the interpreter (a process here, ``python3`` in a container)."""
    return ["-m", "burla.runtime._worker", "--node", node_address, "--worker-id", str(wid),
            "--status-file", status_file]


class WorkerHandle(Protocol):
    pid: int | None  # for RSS watching; None when the engine enforces memory

    @property
    def alive(self) -> bool: ...
    def kill(self) -> None: ...
    async def wait(self) -> None: ...
    @property
    def exit_reason(self) -> str: ...


class Launcher(Protocol):
    runtime: str
    default_image: str
    head_address: str  # the cluster's head as this node reaches it: workers' nested calls go there
    head_ca: str  # ... and the CA of its TLS certificate, if it speaks TLS (PEM; "" for plaintext)
    prepares_environments: bool  # installs a job's requirements for its workers (prepare_environment)
    wheels_only: bool  # ... only from wheels the client ships (no package index reachable)

    def image_distributions(self) -> dict[str, str]:
        """(In a thread) {name: version} of what the default workers' Python has."""
        ...

    def prepare_environment(self, image: str, assign: AssignJob, progress: Callable[[str], None]) -> str:
        """(In a thread) the directory of the job's environment, made now if need be (saying what it
        installs to ``progress`` first); "" if none is needed.  Raises ProviderError naming what
        could not be installed."""
        ...

    async def start(self, wid: int, status_file: str, image: str, gpus: int = 0) -> WorkerHandle: ...
    async def set_limits(self, handle: WorkerHandle, func_cpu: int, func_ram: int, func_gpu: int) -> None: ...
    async def close(self) -> None: ...


# --- processes ---------------------------------------------------------------------------


def _oom_kills() -> int | None:
    """The kernel's count of out-of-memory kills since boot (None: not known here)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class ProcessHandle:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.pid: int | None = proc.pid
        self._oom_kills = _oom_kills()  # a SIGKILL is blamed on memory only if this moved meanwhile

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def wait(self) -> None:
        await self.proc.wait()

    @property
    def exit_reason(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "worker connection lost"
        if code < 0:
            name = signal.Signals(-code).name
            return f"worker died from {name}" + (self._sigkill_cause() if name == "SIGKILL" else "")
        return f"worker exited with code {code} (os._exit or sys.exit outside the call?)"

    def _sigkill_cause(self) -> str:
        now = _oom_kills()
        if now is None or self._oom_kills is None:
            return " (killed: out of memory, or a kill -9 from outside burla)"
        if now > self._oom_kills:
            return " (the kernel's out-of-memory killer ran meanwhile: the machine likely ran out of memory)"
        return " (a kill -9 from outside burla: the kernel's out-of-memory killer did not run)"


class ProcessLauncher:
    """Worker processes on the node's own interpreter.  With ``environments`` (a directory: Compute
    Engine nodes), a job's distributions that interpreter lacks are installed there first; without
    (local clusters, whose workers share the client's interpreter), there is nothing to install."""

    runtime = "process"
    default_image = ""

    def __init__(self, node_address: str, token: str, environments: str | None = None, wheels_only: bool = False):
        self.node_address = node_address
        self.token = token
        self.head_address = ""
        self.head_ca = ""
        self.prepares_environments = environments is not None
        self.wheels_only = wheels_only and environments is not None
        self._environments = (Environments(ProcessInstaller(), environments, wheels_only)
                              if environments is not None else None)

    def image_distributions(self) -> dict[str, str]:
        return self._environments.image_distributions("") if self._environments is not None else {}

    def prepare_environment(self, image: str, assign: AssignJob, progress: Callable[[str], None]) -> str:
        if self._environments is None:
            return ""
        return self._environments.prepare("", requirements(assign), assign.wheels, progress)

    async def start(self, wid: int, status_file: str, image: str, gpus: int = 0) -> WorkerHandle:
        env = dict(os.environ, BURLA_TOKEN=self.token, PYTHONUNBUFFERED="1", BURLA_CLUSTER_HEAD=self.head_address,
                   BURLA_CLUSTER_CA=self.head_ca)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *worker_args(self.node_address, wid, status_file), env=env,
            stdin=asyncio.subprocess.DEVNULL,
        )
        return ProcessHandle(proc)

    async def set_limits(self, handle: WorkerHandle, func_cpu: int, func_ram: int, func_gpu: int) -> None:
        """Processes: the node's RSS watcher enforces func_ram instead."""

    async def close(self) -> None:
        pass
