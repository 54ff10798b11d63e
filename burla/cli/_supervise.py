"""``burla supervise -- head ...``: run a daemon and restart it when it crashes.

The head of a local ``burla up`` cluster runs under it (Docker uses a restart
policy, GCE systemd).  The supervisor holds the head's listening sockets
(``--keep-fd``), so the port never changes and clients and nodes that connect
while the head restarts wait in the kernel's backlog.  It gives the daemon a
lifeline: the daemon exits when the supervisor dies, even by SIGKILL.

A daemon that exits 0 (asked to stop) or 2 (bad arguments or configuration:
restarting would not help) is not restarted; one that crashes more than
``--restarts`` times within ``--within`` seconds is given up on.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from ..cloud._recipes import python_burla

FINAL = (0, 2)  # exit statuses that are not restarted


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("supervise", help="run a burla daemon (burla supervise -- head ...), restarting it on a crash")
    p.add_argument("--keep-fd", type=int, action="append", default=[], help="a descriptor the daemon inherits")
    p.add_argument("--restarts", type=int, default=5, help="crashes tolerated within --within seconds (5)")
    p.add_argument("--within", type=float, default=600.0, help="seconds (600)")
    p.add_argument("--lifeline-fd", type=int, help=argparse.SUPPRESS)  # stop (and the daemon) when it closes
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- and the daemon's burla arguments")
    p.set_defaults(func=main)


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"status {rc}"


def _await_eof(fd: int, then: Callable[[], None]) -> None:
    """Call ``then`` once the write end of pipe ``fd`` closes.  (Siblings share the read end
    and may have made it non-blocking: wait for it to be readable, then read.)"""
    while True:
        select.select([fd], [], [])
        try:
            if not os.read(fd, 1):
                break
        except (BlockingIOError, InterruptedError):
            continue
    then()


def main(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("burla supervise: give the daemon to run, e.g. burla supervise -- head --port 7000", file=sys.stderr)
        return 2
    lifeline_r, _write_end = os.pipe()  # the write end stays open as long as we live
    os.set_inheritable(lifeline_r, True)
    stopping = threading.Event()
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if child and child[-1].poll() is None:
            child[-1].send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    if args.lifeline_fd is not None:  # our parent died: stop as if told to
        threading.Thread(target=_await_eof, args=(args.lifeline_fd, lambda: forward(signal.SIGTERM, None)),
                         daemon=True).start()
    crashes: list[float] = []
    delay = 0.5
    while True:
        started = time.monotonic()
        child.append(subprocess.Popen(python_burla(*argv, "--lifeline-fd", str(lifeline_r)),
                                      pass_fds=(*args.keep_fd, lifeline_r)))
        if stopping.is_set():  # told to stop while it started
            child[-1].terminate()
        rc = child[-1].wait()
        if stopping.is_set() or rc in FINAL:
            return 0 if stopping.is_set() else rc
        now = time.monotonic()
        if now - started > args.within:
            delay = 0.5  # it ran well for a while: start the backoff over
        crashes = [t for t in crashes if now - t < args.within] + [now]
        if len(crashes) > args.restarts:
            print(f"burla supervise: {argv[0]} exited with {_describe(rc)}, its {len(crashes)}th crash within "
                  f"{args.within:g}s; not restarting it", file=sys.stderr, flush=True)
            return 1
        print(f"burla supervise: {argv[0]} exited with {_describe(rc)}; restarting it in {delay:g}s",
              file=sys.stderr, flush=True)
        if stopping.wait(delay):
            return 0
        delay = min(2 * delay, 10.0)
