"""An owner for a daemon's long-lived tasks.

``TaskRegistry`` keeps a strong reference to every task it starts, refuses
new ones once closed, cancels and awaits them all on ``close()``, and
surfaces the first unexpected error: it is logged with its traceback and
``failed`` (an awaitable) raises it, so the daemon that owns the registry
stops instead of running on with a dead part.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("burla.tasks")


class TaskRegistry:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._failed: asyncio.Future[None] | None = None

    def _failure(self) -> asyncio.Future[None]:
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any] | None:
        """Run ``coro`` as a task owned here; None (and ``coro`` closed) after ``close``."""
        if self._closed:
            coro.close()
            return None
        self._failure()
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("%s: task %s failed", self.name, task.get_name(), exc_info=exc)
        failed = self._failure()
        if not failed.done():
            failed.set_exception(exc)

    async def failed(self) -> None:
        """Returns never; raises the first error of a task started here."""
        await asyncio.shield(self._failure())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = 10.0) -> None:
        """Refuse new tasks, cancel every running one and wait for them (up to ``timeout``)."""
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                log.error("%s: task %s did not stop within %gs", self.name, t.get_name(), timeout)
        failed = self._failed
        if failed is not None and failed.done() and not failed.cancelled():
            failed.exception()  # retrieved: reported through failed() or the log already


async def first_of(*aws: object) -> None:
    """Run the awaitables until the first one finishes; cancel the rest.
    The first one's error (if any) propagates."""
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]  # coroutines and futures alike
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        t.result()
