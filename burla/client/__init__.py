"""The client: ``remote_parallel_map`` and which cluster it runs on.

``burla.job`` re-attaches to a detached job.  It talks to a head over ``burla.transport`` only; the embedded cluster (no
cluster configured) is started through ``burla.cloud``'s local provider.
"""

from ._api import remote_parallel_map
from ._async import remote_parallel_map_async
from ._cluster import connect, shutdown
from ._detached import Job, job
from ._executor import BrokenExecutor, Executor

__all__ = ["BrokenExecutor", "Executor", "Job", "connect", "job", "remote_parallel_map", "remote_parallel_map_async",
           "shutdown"]
