"""A joblib backend: ``joblib.Parallel`` (and every scikit-learn ``n_jobs=``) on the cluster.

    import burla.joblib, joblib
    burla.joblib.register()
    with joblib.parallel_backend("burla", n_jobs=-1):
        scores = cross_val_score(model, X, y, n_jobs=-1)

Each ``Parallel`` call runs on one ``burla.Executor``: joblib's batches of
tasks are its calls.  It behaves as joblib's process backends do:
``n_jobs=-1`` means every slot of the cluster (``-2`` all but one...;
``parallel_backend``'s default), ``n_jobs=1`` runs in this process; a
task's exception is raised by ``Parallel`` as its own type after the other
tasks are aborted (canceled on the cluster); a ``Parallel`` inside a task
uses threads on its worker (then runs serially deeper down), as under loky.
``return_as="generator"`` / ``"generator_unordered"`` and ``timeout=`` work.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent import futures
from typing import Any

from joblib import register_parallel_backend  # type: ignore[import-untyped]  # (joblib ships no types)
from joblib._parallel_backends import (  # type: ignore[import-untyped]
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

__all__ = ["BurlaBackend", "register"]
EXECUTOR_OPTIONS = ("func_cpu", "func_ram", "max_retries", "func_timeout", "image", "func_gpu", "max_input_bytes",
                    "sync_packages")


def register() -> None:
    """Make ``"burla"`` a joblib backend name: ``joblib.parallel_backend("burla")``."""
    register_parallel_backend("burla", BurlaBackend)


class BurlaBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]  # (untyped bases)
    """joblib's batches of tasks as the calls of a ``burla.Executor``.

    Keyword arguments (``parallel_backend("burla", func_cpu=2, ...)``) go to
    ``burla.Executor``: ``func_cpu``, ``func_ram``, ``max_retries``,
    ``func_timeout``, ``image``, ``func_gpu``.
    """

    supports_retrieve_callback = True  # generators, timeouts, results as they come
    supports_inner_max_num_threads = False
    default_n_jobs = 1

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 **executor_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads,
                         **executor_kwargs)
        unknown = sorted(set(executor_kwargs) - set(EXECUTOR_OPTIONS))
        if unknown:
            raise TypeError(f"the burla backend does not take {', '.join(unknown)}; it takes "
                            f"{', '.join(EXECUTOR_OPTIONS)} (burla.Executor's options)")
        self._executor: Any = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(_cluster_slots() + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **executor_kwargs: Any) -> int:
        n = self.effective_n_jobs(n_jobs)
        if n == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        if require == "sharedmem":
            raise ValueError("the burla backend runs tasks in other processes on the cluster: it cannot honour "
                             "require='sharedmem' (use joblib's threading backend for that call)")
        from .client import Executor

        self.parallel = parallel
        options = {**self.backend_kwargs, **executor_kwargs}
        # (joblib passes its process backends' memmapping options, max_nbytes...: moot here)
        self._executor = Executor(max_workers=n, **{k: v for k, v in options.items() if k in EXECUTOR_OPTIONS})
        return n

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> futures.Future[Any]:
        future: futures.Future[Any] = self._executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: futures.Future[Any]) -> Any:
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed (or the caller stopped a generator): cancel the rest on the cluster."""
        if self._executor is not None:
            self._executor._pool.cancel("joblib aborted the Parallel call")
            self._executor = None
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel, **self.backend_kwargs)

    def terminate(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.reset_batch_stats()

    def __getstate__(self) -> dict[str, Any]:  # (joblib may pickle a backend: never its executor)
        state = dict(self.__dict__)
        state["_executor"] = None
        state["parallel"] = None
        return state


def _cluster_slots() -> int:
    """The cluster's worker slots (as its head reported them when we connected)."""
    from .client import _cluster

    return _cluster.session().cluster_workers or os.cpu_count() or 1
