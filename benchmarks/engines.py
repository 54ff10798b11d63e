"""One adapter per engine: start, map one item per call, one call, stop.

Every engine gets ``ncpu`` worker processes.  ``map`` submits one task per
item (no user-side chunking): burla batches internally, which is the point
of W1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


class Engine:
    name = "?"

    def __init__(self, ncpu: int):
        self.ncpu = ncpu

    def start(self) -> None: ...
    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]: raise NotImplementedError
    def one(self, fn: Callable[[Any], Any], x: Any) -> Any: return self.map(fn, [x])[0]
    def imap(self, fn: Callable[[Any], Any], items: Any) -> Any: raise NotImplementedError
    def executor(self) -> Any: raise NotImplementedError  # a concurrent.futures.Executor (W8)
    def stop(self) -> None: ...
    def service_pids(self) -> list[int]: return []


class Burla(Engine):
    name = "burla"

    def __init__(self, ncpu: int, nodes: int = 1, queue: str = ""):
        super().__init__(ncpu)
        self.nodes = nodes
        self.queue = queue  # "": the embedded cluster; else a local cluster's head --queue (memory, redis://...)

    def start(self) -> None:
        import burla
        from burla.client import _cluster
        from burla.cloud import start_local_cluster

        if self.nodes > 1 or self.queue:  # S1: same CPUs, split over nodes; or a queue backend named
            self.cluster = start_local_cluster("bench", self.nodes, max(1, self.ncpu // self.nodes), attached=True,
                                               queue=self.queue or "memory")
            _wait_for_nodes(self.cluster.record, self.nodes)  # measure the cluster, not its start-up
            burla.connect(self.cluster.record.head, self.cluster.record.token)
        self._burla = burla  # the embedded cluster starts with the first call
        self._cluster = _cluster

    def map(self, fn, items):
        return self._burla.remote_parallel_map(fn, items, spinner=False)

    def one(self, fn, x):
        return self._burla.remote_parallel_map(fn, [x], spinner=False)[0]

    def imap(self, fn, items):
        return self._burla.remote_parallel_map(fn, items, generator=True, spinner=False)

    def executor(self):
        if getattr(self, "ex", None) is None:
            self.ex = self._burla.Executor(max_workers=self.ncpu)
        return self.ex

    def service_pids(self) -> list[int]:
        cluster = getattr(self, "cluster", None) or self._cluster._embedded
        return [cluster.procs[0].pid] if cluster else []  # the head

    def stop(self) -> None:
        if getattr(self, "ex", None) is not None:
            self.ex.shutdown()
        self._burla.shutdown()
        if getattr(self, "cluster", None):
            self.cluster.stop()


class MpPool(Engine):
    name = "mp_pool"

    def start(self):
        import multiprocessing

        self.pool = multiprocessing.Pool(self.ncpu)

    def map(self, fn, items):
        return self.pool.map(fn, items, chunksize=1)

    def one(self, fn, x):
        return self.pool.apply(fn, (x,))

    def imap(self, fn, items):
        return self.pool.imap(fn, items, chunksize=1000)

    def stop(self):
        self.pool.terminate()
        self.pool.join()


class ProcessPool(Engine):
    name = "ppe"

    def start(self):
        from concurrent.futures import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(self.ncpu)
        self.ex.submit(abs, 1).result()

    def map(self, fn, items):
        return list(self.ex.map(fn, items))

    def one(self, fn, x):
        return self.ex.submit(fn, x).result()

    def executor(self):
        return self.ex

    def stop(self):
        self.ex.shutdown(cancel_futures=True)


class Loky(ProcessPool):
    name = "loky"

    def start(self):
        from loky import get_reusable_executor

        self.ex = get_reusable_executor(max_workers=self.ncpu, timeout=3600)
        self.ex.submit(abs, 1).result()

    def stop(self):
        self.ex.shutdown(wait=True)


class Dask(Engine):
    name = "dask"

    def start(self):
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=self.ncpu, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        self.client = Client(self.cluster)

    def map(self, fn, items):
        return self.client.gather(self.client.map(fn, items, pure=False))

    def one(self, fn, x):
        return self.client.submit(fn, x, pure=False).result()

    def stop(self):
        self.client.close()
        self.cluster.close()


def _start_ray(ncpu: int) -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=ncpu, include_dashboard=False, log_to_driver=False)
    return ray


class RayTasks(Engine):
    name = "ray_tasks"

    def start(self):
        self.ray = _start_ray(self.ncpu)
        self._remote: dict[Any, Any] = {}

    def _r(self, fn):
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(fn)
        return self._remote[fn]

    def map(self, fn, items):
        r = self._r(fn)
        return self.ray.get([r.remote(x) for x in items])

    def one(self, fn, x):
        return self.ray.get(self._r(fn).remote(x))

    def stop(self):
        self.ray.shutdown()


class RayPool(Engine):
    name = "ray_pool"

    def start(self):
        self.ray = _start_ray(self.ncpu)
        from ray.util.multiprocessing import Pool

        self.pool = Pool(self.ncpu)

    def map(self, fn, items):
        return self.pool.map(fn, items, chunksize=1)

    def one(self, fn, x):
        return self.pool.apply(fn, (x,))

    def stop(self):
        self.pool.terminate()
        self.ray.shutdown()


ENGINES: dict[str, type[Engine]] = {e.name: e for e in (Burla, MpPool, ProcessPool, Loky, Dask, RayTasks, RayPool)}


def _wait_for_nodes(record, nodes: int, deadline_s: float = 120.0) -> None:
    """Until the cluster's head answers and ``nodes`` nodes registered (a loaded machine can
    take a while to start a head and its nodes)."""
    from burla.cli._fetch import fetch

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if len(fetch(record, "/v1/cluster")["nodes"]) >= nodes:
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the benchmark cluster's {nodes} node(s) did not register within {deadline_s:g}s")
        time.sleep(0.1)
