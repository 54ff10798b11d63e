"""How a node daemon starts worker processes: as local processes, or as
containers next to it (the Docker provider's ``container`` runtime).

A launcher returns a ``WorkerHandle``: ``kill()`` it, ``await wait()`` for
its exit, then read ``exit_reason``.  Worker containers get the job's CPU
and memory limits from the engine (``set_limits``), so ``func_ram`` is
enforced by the kernel's cgroup and an OOM kill is reported as such.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, Protocol


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

    async def start(self, wid: int, status_file: str, image: str, gpus: int = 0) -> WorkerHandle: ...
    async def set_limits(self, handle: WorkerHandle, func_cpu: int, func_ram: int, func_gpu: int) -> None: ...
    async def close(self) -> None: ...


# --- processes ---------------------------------------------------------------------------


class ProcessHandle:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.pid: int | None = proc.pid

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
            return f"worker died from {name}" + (" (killed: possibly out of memory)" if name == "SIGKILL" else "")
        return f"worker exited with code {code} (os._exit or sys.exit outside the call?)"


class ProcessLauncher:
    runtime = "process"
    default_image = ""

    def __init__(self, node_address: str, token: str):
        self.node_address = node_address
        self.token = token

    async def start(self, wid: int, status_file: str, image: str, gpus: int = 0) -> WorkerHandle:
        env = dict(os.environ, BURLA_TOKEN=self.token, PYTHONUNBUFFERED="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "burla.runtime._worker", "--node", self.node_address, "--worker-id", str(wid),
            "--status-file", status_file, env=env, stdin=asyncio.subprocess.DEVNULL,
        )
        return ProcessHandle(proc)

    async def set_limits(self, handle: WorkerHandle, func_cpu: int, func_ram: int, func_gpu: int) -> None:
        """Processes: the node's RSS watcher enforces func_ram instead."""

    async def close(self) -> None:
        pass


# --- containers ----------------------------------------------------------------------------


class ContainerHandle:
    pid: int | None = None

    def __init__(self, container: Any):
        self.container = container
        self._alive = True
        self._reason = "worker container stopped"

    @property
    def alive(self) -> bool:
        return self._alive

    def kill(self) -> None:
        if self._alive:
            asyncio.get_running_loop().run_in_executor(None, self._kill_quietly)

    def _kill_quietly(self) -> None:
        try:
            self.container.kill()
        except Exception:
            pass  # already gone: wait() reports how it ended

    async def wait(self) -> None:
        self._reason = await asyncio.to_thread(self._wait_and_remove)
        self._alive = False

    def _wait_and_remove(self) -> str:
        try:
            code = self.container.wait().get("StatusCode", -1)
            self.container.reload()
            state = self.container.attrs.get("State", {})
            limit = self.container.attrs.get("HostConfig", {}).get("Memory") or 0
        except Exception as e:
            return f"worker container vanished ({type(e).__name__})"
        finally:
            try:
                self.container.remove(force=True)
            except Exception:
                pass
        if state.get("OOMKilled"):
            return f"worker container OOM-killed at its memory limit of {limit / 2**20:.0f} MiB (func_ram)"
        if code == 137:
            return "worker container killed (SIGKILL)"
        if code == 139:
            return "worker container died from SIGSEGV"
        return f"worker container exited with code {code}"

    @property
    def exit_reason(self) -> str:
        return self._reason


class ContainerLauncher:
    """Worker containers on the node's Docker network.

    The node itself runs in a container of that network, reachable by
    ``advertise`` (its container name and worker port); the status files live
    on a named volume mounted at the same path in the node and its workers.
    """

    runtime = "container"

    def __init__(self, token: str, advertise: str, network: str, default_image: str, status_volume: str,
                 status_dir: str, labels: dict[str, str], name_prefix: str, ram_bytes: int):
        from ..cloud.docker._client import client

        self.bundle = _write_bundle(os.path.join(status_dir, "bundle"))
        self.docker = client()
        self.token = token
        self.advertise = advertise
        self.network = network
        self.default_image = default_image
        self.status_volume = status_volume
        self.status_dir = status_dir
        self.labels = labels
        self.name_prefix = name_prefix
        self.ram_bytes = ram_bytes

    async def start(self, wid: int, status_file: str, image: str, gpus: int = 0) -> WorkerHandle:
        return ContainerHandle(await asyncio.to_thread(self._create, wid, status_file, image or self.default_image, gpus))

    def _create(self, wid: int, status_file: str, image: str, gpus: int) -> Any:
        import docker.types

        from ..cloud.docker._client import translated

        gpu = [docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None
        name = f"{self.name_prefix}-w{wid}"
        with translated(f"worker image {image!r} on this node"):
            self.docker.images.get(image)  # never let run() try a pull: no registry
        env = {"BURLA_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        if image != self.default_image:  # a user's image: run burla's worker from the shared bundle
            env["PYTHONPATH"] = self.bundle
        with translated(f"starting worker container {name} from {image}"):
            try:
                self.docker.containers.get(name).remove(force=True)  # left over from a crash
            except Exception:
                pass
            return self.docker.containers.run(
                image, ["-m", "burla.runtime._worker", "--node", self.advertise, "--worker-id", str(wid),
                        "--status-file", status_file],
                entrypoint=["python3"], name=name, detach=True, network=self.network, environment=env,
                volumes={self.status_volume: {"bind": self.status_dir, "mode": "rw"}},
                labels={**self.labels, "burla.role": "worker"}, mem_limit=self.ram_bytes, device_requests=gpu,
            )

    async def set_limits(self, handle: WorkerHandle, func_cpu: int, func_ram: int, func_gpu: int) -> None:
        container = handle.container  # type: ignore[attr-defined]
        ram = func_ram or self.ram_bytes
        await asyncio.to_thread(container.update, cpu_period=100_000, cpu_quota=100_000 * max(func_cpu, 1),
                                mem_limit=ram, memswap_limit=ram)

    async def close(self) -> None:
        await asyncio.to_thread(self.docker.close)


def _write_bundle(dest: str) -> str:
    """burla, cloudpickle and tblib as pure-Python sources in ``dest`` (on the
    volume shared with worker containers): with them, any image that has
    Python >= 3.10 can run a worker (msgspec absent: see transport/_purewire)."""
    import shutil

    import cloudpickle
    import tblib

    from .. import __file__ as burla_init

    tmp = dest + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for module_init in (burla_init, cloudpickle.__file__, tblib.__file__):
        src = os.path.dirname(module_init)
        shutil.copytree(src, os.path.join(tmp, os.path.basename(src)),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "static", "Dockerfile"))
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return dest
