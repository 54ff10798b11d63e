"""Worker containers next to a containerised node daemon (the Docker
provider's ``container`` runtime): a ``runtime._launch.Launcher``.

Worker containers get the job's CPU and memory limits from the engine
(``set_limits``), so ``func_ram`` is enforced by the kernel's cgroup and an
OOM kill is reported as such.  Docker's errors become ``ProviderError`` here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from ...runtime._environments import requirements
from ...runtime._launch import WorkerHandle, worker_args
from ...transport.messages import AssignJob
from ._client import client, translated
from ._environment import container_environments

log = logging.getLogger("burla.node")


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
    prepares_environments = True

    def __init__(self, token: str, advertise: str, network: str, default_image: str, status_volume: str,
                 status_dir: str, labels: dict[str, str], name_prefix: str, ram_bytes: int,
                 wheels_only: bool = False):
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
        self.head_address = ""
        self.head_ca = ""
        # Environments on the status volume: mounted at status_dir in the node and its workers alike.
        self.wheels_only = wheels_only
        self.environments = container_environments(self.docker, os.path.join(status_dir, "env"),
                                                   {status_volume: {"bind": status_dir, "mode": "rw"}},
                                                   network=network, wheels_only=wheels_only)

    def image_distributions(self) -> dict[str, str]:
        return self.environments.image_distributions(self.default_image)

    def prepare_environment(self, image: str, assign: AssignJob, progress: Callable[[str], None]) -> str:
        def told(what: str) -> None:
            log.info("job %s: installing %s", assign.job_id, what)
            progress(what)

        return self.environments.prepare(image or self.default_image, requirements(assign), assign.wheels, told)

    async def start(self, wid: int, status_file: str, image: str, gpus: int = 0) -> WorkerHandle:
        image = image or self.default_image
        return ContainerHandle(await asyncio.to_thread(self._create, wid, status_file, image, gpus))

    def _create(self, wid: int, status_file: str, image: str, gpus: int) -> Any:
        import docker.types

        gpu = [docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None
        name = f"{self.name_prefix}-w{wid}"
        with translated(f"worker image {image!r} on this node"):
            self.docker.images.get(image)  # never let run() try a pull: no registry
        env = {"BURLA_TOKEN": self.token, "PYTHONUNBUFFERED": "1", "BURLA_CLUSTER_HEAD": self.head_address,
               "BURLA_CLUSTER_CA": self.head_ca}
        if image != self.default_image:  # a user's image: run burla's worker from the shared bundle
            env["PYTHONPATH"] = self.bundle
        with translated(f"starting worker container {name} from {image}"):
            try:
                self.docker.containers.get(name).remove(force=True)  # left over from a crash
            except Exception:
                pass
            return self.docker.containers.run(
                image, worker_args(self.advertise, wid, status_file),
                entrypoint=["python3"], name=name, detach=True, network=self.network, environment=env,
                volumes={self.status_volume: {"bind": self.status_dir, "mode": "rw"}},
                labels={**self.labels, "burla.role": "worker"}, mem_limit=self.ram_bytes, device_requests=gpu,
            )

    async def set_limits(self, handle: WorkerHandle, func_cpu: int, func_ram: int, func_gpu: int) -> None:
        assert isinstance(handle, ContainerHandle)
        ram = func_ram or self.ram_bytes
        await asyncio.to_thread(self._update, handle.container, max(func_cpu, 1), ram)

    @staticmethod
    def _update(container: Any, cpus: int, ram: int) -> None:
        with translated(f"setting the limits of worker container {getattr(container, 'name', '?')}"):
            container.update(cpu_period=100_000, cpu_quota=100_000 * cpus, mem_limit=ram, memswap_limit=ram)

    async def close(self) -> None:
        await asyncio.to_thread(self.docker.close)


def _write_bundle(dest: str) -> str:
    """burla, cloudpickle and tblib as pure-Python sources in ``dest`` (on the
    volume shared with worker containers): with them, any image that has
    Python >= 3.10 can run a worker (msgspec absent: see transport/_purewire)."""
    import shutil

    import cloudpickle
    import tblib

    from ... import __file__ as burla_init

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
