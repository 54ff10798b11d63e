"""What a worker process knows about where it runs, for ``remote_parallel_map``
called inside the user's function (a nested call, issue 10).

The worker sets these (``runtime._worker``); the client reads them
(``client._cluster``, ``client._job``): a nested call goes to the worker's
own cluster as a child of the job whose call made it, so the head can run it
beside its parent (``scheduler._placement``) instead of making it wait for
nodes its parent holds.
"""

from __future__ import annotations

cluster: tuple[str, str, str] | None = None  # (head address, token, CA PEM or "") of this worker's cluster
parent_job: str = ""  # the job whose call is running in this process, while one runs
