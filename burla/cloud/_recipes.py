"""How the head and node daemons are started, written once for every
provider: the argument lists here are what a local process, a container and
a VM's startup script all run (after ``python -m burla`` or ``burla``)."""

from __future__ import annotations

import sys

# glibc serves allocations over 128 KiB-32 MiB with fresh mmap()s and gives
# them back on free, so every 1 MiB payload a daemon receives would page-fault
# 256 fresh pages.  Keeping such buffers on the heap makes them reusable; the
# daemons' memory stays bounded by their credit windows anyway (issue #3).
DAEMON_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def python_burla(*args: str) -> list[str]:
    """``args`` run by this interpreter's burla."""
    return [sys.executable, "-m", "burla", *args]


NODE_EXIT_HEAD_GONE = 3  # `burla node`: the head stayed unreachable past --reconnect-for: the node is done


def head_args(name: str, *, host: str | None = None, port: int | None = None, http_port: int | None = None,
              listen_fd: int | None = None, http_fd: int | None = None, reap_gce: str | None = None,
              tls: tuple[str, str] | None = None, queue: str = "memory") -> list[str]:
    args = ["head", "--name", name]
    if queue != "memory":
        args += ["--queue", queue]
    if host is not None:
        args += ["--host", host]
    if port is not None:
        args += ["--port", str(port)]
    if http_port is not None:
        args += ["--http-port", str(http_port)]
    if listen_fd is not None:
        args += ["--listen-fd", str(listen_fd)]
    if http_fd is not None:
        args += ["--http-fd", str(http_fd)]
    if reap_gce is not None:
        args += ["--reap-gce", reap_gce]
    if tls is not None:  # (certificate file, key file)
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    return args


def node_args(head: str, node_id: str, *, workers: int | None = None, provider: str | None = None,
              reconnect_for: float | None = None, idle_shutdown: float | None = None,
              status_dir: str | None = None, environments: str | None = None,
              tls_ca: str | None = None) -> list[str]:
    args = ["node", "--head", head, "--node-id", node_id]
    if provider is not None:
        args += ["--provider", provider]
    if reconnect_for is not None:
        args += ["--reconnect-for", f"{reconnect_for:g}"]
    if idle_shutdown is not None:
        args += ["--idle-shutdown", f"{idle_shutdown:g}"]
    if status_dir is not None:
        args += ["--status-dir", status_dir]
    if environments is not None:
        args += ["--environments", environments]
    if tls_ca is not None:
        args += ["--tls-ca", tls_ca]
    if workers:
        args += ["--workers", str(workers)]
    return args
