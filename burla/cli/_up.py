"""``burla up [cluster.yaml]``: start a cluster and record it for later calls."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from .. import _config
from .._config import ClusterRecord
from .._errors import ConfigError, ProviderError
from ..cloud import get_provider, load_spec
from ..cloud._spec import provider_type
from ._fetch import responds, wait_ready


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="start a cluster (default: a local one) and make it the current cluster")
    p.add_argument("spec", nargs="?", help="cluster.yaml (name, provider: {type: local}, nodes, workers_per_node)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for every node to register (default: the provider's, 30 s locally)")
    p.set_defaults(func=main)


def _read_spec(path_text: str | None) -> Any:
    if not path_text:
        return load_spec("{}", "cluster.yaml")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"{path_text}: no such file")
    return load_spec(path.read_text(), path_text)


# SIGINT and SIGTERM only set a flag (and cancel the provider's running coroutine): raised from
# the handler, KeyboardInterrupt can land in a finalizer running just then, where Python prints a
# traceback and swallows it.  The waits check the flag and raise it from ordinary code.
T = TypeVar("T")
_signalled = threading.Event()
_running: list[asyncio.Task[Any]] = []  # the provider's coroutine, while it runs


def _interrupted(signum: int, frame: object) -> None:
    _signalled.set()
    for task in list(_running):
        task.get_loop().call_soon_threadsafe(task.cancel)


def _check_interrupted() -> None:
    if _signalled.is_set():
        raise KeyboardInterrupt


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, ended by an interrupt (KeyboardInterrupt) once in-flight calls return."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        _running.append(task)
        try:
            return await coro
        finally:
            _running.remove(task)

    _check_interrupted()
    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        _check_interrupted()
        raise


def _undo(provider: Any, name: str, record: ClusterRecord | None) -> int:
    """Interrupted: delete what was created (found by label; the record's processes too), once,
    with further Ctrl-Cs ignored until it is done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    target = record or _config.load_pending(name) or ClusterRecord(name=name, provider=provider.kind)
    try:
        asyncio.run(provider.down(name, target))  # (what up's own clean-up left, if it got that far)
    except (ProviderError, OSError) as e:
        print(f"burla up: interrupted; deleting what it created failed ({e}): run `burla down {name}`",
              file=sys.stderr)
        return 130
    _config.remove_cluster(name)
    print(f"burla up: interrupted; deleted everything it had created of cluster {name!r}", file=sys.stderr)
    return 130


def main(args: argparse.Namespace) -> int:
    try:
        spec = _read_spec(args.spec)
    except ConfigError as e:
        print(f"burla up: {e}", file=sys.stderr)
        return 2
    existing = _config.load_cluster(spec.name)
    if existing is not None and responds(existing):
        print(f"burla up: cluster {spec.name!r} is already running at {existing.head} (burla down {spec.name} first)",
              file=sys.stderr)
        return 1
    provider = get_provider(provider_type(spec))
    # Before the first create call: a `burla up` killed from here on leaves what `burla down` needs.
    _config.save_pending(provider.placeholder(spec))
    previous = {sig: signal.signal(sig, _interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}  # both clean up
    record = None
    try:
        try:
            record = _run(provider.up(spec))
        except (ProviderError, OSError) as e:
            print(f"burla up: {e}", file=sys.stderr)
            _config.remove_cluster(spec.name)
            return 1
        _check_interrupted()
        try:
            wait_ready(record, spec.nodes, args.timeout or provider.ready_timeout, _check_interrupted)
        except TimeoutError as e:
            asyncio.run(provider.down(record.name, record))
            _config.remove_cluster(spec.name)
            print(f"burla up: {e}; {provider.log_hint(record)}", file=sys.stderr)
            return 1
        _check_interrupted()  # (one that came in the last moment still undoes)
    except KeyboardInterrupt:
        return _undo(provider, spec.name, record)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    path = _config.save_cluster(record)
    print(f"cluster {spec.name!r} is up: head {record.head}, API {record.http}, {spec.nodes} node(s)")
    print(f"dashboard: {record.http}/  (log in with `burla dashboard`, which prints a link carrying the token)")
    if record.ca:
        allowed = record.extra.get("allow_from")
        print("TLS: the head's certificate is signed by the cluster's own CA (`burla status --ca` prints it)"
              + (f"; clients are admitted from {', '.join(allowed)} (head.allow_from)" if allowed else ""))
    print(f"recorded in {path}; remote_parallel_map now runs there. Stop it with: burla down {spec.name}")
    return 0
