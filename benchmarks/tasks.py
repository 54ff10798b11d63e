"""The functions every engine runs (importable, so peers pickle them by reference)."""

from __future__ import annotations

import time


def identity(x):
    return x


def spin(n: int) -> int:
    """Pure-Python CPU work: n loop iterations."""
    acc = 0
    for i in range(n):
        acc += i * i % 7
    return acc


def calibrate_spin(seconds: float) -> int:
    """Iterations of ``spin`` that take about ``seconds`` on this machine."""
    n = 100_000
    while True:
        t0 = time.perf_counter()
        spin(n)
        dt = time.perf_counter() - t0
        if dt > 0.05:
            return max(1, int(n * seconds / dt))
        n *= 2


def nap(seconds: float) -> float:
    """A slow call that does no work (W6)."""
    time.sleep(seconds)
    return seconds


def shout(x):
    """A print-only call (S2)."""
    print(x)


def hold(seconds: float) -> str:
    """Holds a worker slot for ``seconds`` and says where it ran.  Simulated
    nodes (S2) await it instead of calling it, and answer their node id."""
    import socket

    time.sleep(seconds)
    return socket.gethostname()
