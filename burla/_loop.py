"""Event-loop plumbing shared by the daemons and the client: uvloop when
installed, and the lifeline that makes a child die with its parent."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def watch_lifeline(fd: int, on_parent_death: Callable[[], None]) -> None:
    """Call ``on_parent_death`` once the write end of pipe ``fd`` closes.

    The parent keeps the write end open and never writes; the kernel closes it
    when the parent dies for any reason, SIGKILL included.
    """
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(fd)
            on_parent_death()

    loop.add_reader(fd, readable)


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (a head holds
    one descriptor per node and client: 1024 would cap it near 1,000 nodes).
    Returns the soft limit now in force."""
    import resource  # Unix only, like the daemons

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep what we have: the limit is advice, not a requirement
    return soft
