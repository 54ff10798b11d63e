"""The worker status file: 16 bytes a worker rewrites before and after each
call, read by its node when the worker dies (which input crashed it) and by
the node's watchdog (how long the current call has run).

Layout: ``<qd``: the index of the input being run (-1: none, ``LOADING``: the
function is being unpickled) and the
``time.monotonic()`` at which its call started.  Defined once, here; the
worker maps the file, the node reads it.  Pure stdlib: worker containers
import it without burla's dependencies.
"""

from __future__ import annotations

import os
import struct

STATUS = struct.Struct("<qd")
LOADING = -2  # the index while the worker unpickles a job's function (-1: no call running)
IDLE = STATUS.pack(-1, 0.0)


def create(path: str) -> None:
    """A fresh status file saying "no call running"."""
    with open(path, "wb") as f:
        f.write(IDLE)


def read(path: str) -> tuple[int, float]:
    """(index of the running input or -1, monotonic start time); (-1, 0.0)
    when the file is missing or short."""
    try:
        with open(path, "rb") as f:
            index, started = STATUS.unpack(f.read(STATUS.size))
    except (OSError, struct.error):
        return -1, 0.0
    return int(index), float(started)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
