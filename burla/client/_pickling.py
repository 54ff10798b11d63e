"""Pickling on the client: the function (with local modules by value) and
input batches, with errors that name the object at fault."""

from __future__ import annotations

import io
import os
import pickle
import sys
import sysconfig
import time
import types
from collections import ChainMap
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, ClassVar

import cloudpickle

from .._errors import InputTooBig, SerializationError
from ..transport._payload import Packer, Segments

MAX_FUNCTION_BYTES = 100 * 1024 * 1024
_system_dirs = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
              sys.prefix, sys.base_prefix, sys.exec_prefix}
)
_registered: set[str] = set()
_scanned_count = 0


def _local_roots() -> list[str]:
    roots = [os.getcwd()]
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file:
        roots.append(os.path.dirname(os.path.abspath(main_file)))
    return [os.path.realpath(r) + os.sep for r in roots]


def _is_local(module: ModuleType, roots: list[str]) -> bool:
    path = getattr(module, "__file__", None)
    if not path or module.__name__ in ("__main__", "burla") or module.__name__.startswith("burla."):
        return False
    path = os.path.realpath(path)
    if path.startswith(_system_dirs) or "site-packages" in path or "dist-packages" in path:
        return False
    return bool(path.startswith(tuple(roots)))


def register_local_modules() -> None:
    """Ship modules that live next to the user's script (not installed
    anywhere the workers could import them from) by value."""
    global _scanned_count  # noqa: PLW0603 (a cache of the scan, process-wide by nature)
    if len(sys.modules) == _scanned_count:
        return
    roots = _local_roots()
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        if top in _registered or module is None or "." in name:
            continue
        if _is_local(module, roots):
            cloudpickle.register_pickle_by_value(module)
            _registered.add(top)
    _scanned_count = len(sys.modules)


def _code_reduce_keeping_filename(code: types.CodeType) -> Any:
    # cloudpickle replaces co_filename with "<dynamic-code>"; keep the real one
    # so remote tracebacks point at the user's file (and show its lines).
    ctor, args = cloudpickle.cloudpickle._code_reduce(code)
    return ctor, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


class _FunctionPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle ships no types
    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(
        {types.CodeType: _code_reduce_keeping_filename}, cloudpickle.Pickler.dispatch_table)


def dumps_function(fn: Callable[..., Any]) -> bytes:
    register_local_modules()
    try:
        buf = io.BytesIO()
        _FunctionPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(fn)
        blob = buf.getvalue()
    except Exception as e:
        raise SerializationError(
            f"cannot pickle function {getattr(fn, '__qualname__', fn)!r}: {type(e).__name__}: {e}. "
            "It (or a global it uses) holds something that cannot cross processes, such as a lock, "
            "socket or open file: create that object inside the function instead."
        ) from None
    if len(blob) > MAX_FUNCTION_BYTES:
        raise SerializationError(
            f"function {fn.__qualname__!r} pickles to {len(blob) / 2**20:.0f} MiB (limit "
            f"{MAX_FUNCTION_BYTES / 2**20:.0f} MiB): it captures large data; pass that data as inputs instead"
        )
    return blob


MAX_BATCH_ITEMS = 1024  # inputs in one batch, at most (calls of about 20 us each fill one)


class BatchSizer:
    """How many calls go in one batch.

    Until results show how long a call takes, every batch holds one input: a
    job of slow calls sent in bigger batches before its first result would
    queue inputs behind busy workers while other slots idle (1,000 one-second
    calls on 100 slots went out three to a batch: 82% busy).  Then
    (``observe``) a batch holds about ``BATCH_SECONDS`` of calls: tiny calls
    travel by the thousand, so per-message costs vanish however many slots
    the cluster has, and slow ones one per free slot.
    """

    BATCH_SECONDS = 0.02

    def __init__(self, max_items: int = 1024) -> None:
        self.max_items = max(1, max_items)
        self.target = 1
        self.observed = False
        self._call_seconds = 0.0

    def observe(self, durations: list[float]) -> None:
        """Durations of calls that finished (any thread: readers only read ``target``)."""
        if not durations:
            return
        mean = sum(durations) / len(durations)
        self._call_seconds = mean if not self.observed else 0.7 * self._call_seconds + 0.3 * mean
        self.observed = True
        fit = self.BATCH_SECONDS / max(self._call_seconds, 1e-9)
        self.target = max(1, min(self.max_items, int(fit)))


class Batcher:
    """Turns an iterable of inputs into (start, ends, payload) batches.

    Batches close at ``size`` inputs, ``max_bytes`` of pickles, or
    ``max_delay`` seconds after their first input (so a slow generator still
    streams).  ``size`` grows by doubling to the ``BatchSizer``'s target.
    """

    def __init__(self, inputs: Any, max_input_bytes: int, max_bytes: int = 512 * 1024, max_delay: float = 0.02,
                 max_items: int = MAX_BATCH_ITEMS):
        self._it = iter(inputs)
        self.sizer = BatchSizer(max_items)
        self.size = 1  # inputs in the next batch
        self.max_input_bytes = max_input_bytes
        self.max_bytes = max_bytes
        self.max_delay = max_delay
        self.count = 0
        self.exhausted = False

    def observe(self, durations: list[float]) -> None:
        """Durations of calls that finished (from the consumer's thread: the
        feeder reads ``size`` between batches)."""
        self.sizer.observe(durations)
        self.size = min(self.size, self.sizer.target)

    def next_batch(self) -> tuple[int, list[int], bytes | Segments] | None:
        if self.exhausted:
            return None
        packer = Packer()
        start = self.count
        deadline = 0.0
        for obj in self._it:
            try:
                n = packer.add(obj)
            except Exception as e:
                raise SerializationError(
                    f"input {self.count} ({type(obj).__name__}) cannot be pickled: {type(e).__name__}: {e}"
                ) from None
            if n > self.max_input_bytes:
                raise InputTooBig(
                    f"input {self.count} pickles to {n / 2**20:.1f} MiB, "
                    f"over the {self.max_input_bytes / 2**20:.0f} MiB "
                    "limit: pass a path or URL and load the data inside the function, or raise max_input_bytes"
                )
            self.count += 1
            if len(packer.ends) == 1:
                deadline = time.monotonic() + self.max_delay
            if len(packer.ends) >= self.size or packer.size >= self.max_bytes or time.monotonic() > deadline:
                break
        else:
            self.exhausted = True
        if not packer.ends:
            return None
        if self.sizer.observed:
            self.size = min(self.size * 2, self.sizer.target)
        ends, payload = packer.take()
        return start, ends, payload

    def __iter__(self) -> Iterator[tuple[int, list[int], bytes | Segments]]:
        while (batch := self.next_batch()) is not None:
            yield batch
