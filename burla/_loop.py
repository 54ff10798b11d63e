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
