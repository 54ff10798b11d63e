"""``remote_parallel_map_async``: the same job, awaited without blocking the caller's loop.

The job is the one ``remote_parallel_map`` runs (same session and loop
thread, same channel, same errors).  Its events are consumed on a thread of
the call's own, which hands results to the caller's loop: the loop only
ever waits on an ``asyncio`` primitive.  Cancelling the awaiting task (or
dropping the ``async for``) abandons the job, which is then canceled on the
cluster.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, Literal, overload

from ._api import MAX_INPUT_BYTES, collect, ordered_values, prepare
from ._job import JobRun

STREAM_AHEAD = 1024  # results the consumer thread may hold for an ``async for`` that is slower than the job
CANCEL_WAIT = 5.0  # seconds a cancelled await waits for the job's cancellation to be confirmed


async def _gather(run: JobRun) -> list[Any]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[Any]] = loop.create_future()

    def consume() -> None:
        try:
            result: Any = collect(run, run.results())
            ok = True
        except BaseException as e:
            result, ok = e, False
        loop.call_soon_threadsafe(_settle, done, ok, result)

    threading.Thread(target=consume, name="burla-async-map", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        run.abandon()
        await _quietly(done)
        raise


async def _stream(run: JobRun, ordered: bool) -> AsyncIterator[Any]:
    pump = _Pump(run, ordered, asyncio.get_running_loop())
    try:
        while True:
            got = await pump.next()
            if got is _END:
                return
            yield got
    finally:
        pump.stop()
        await _quietly(pump.finished)


_END = object()


class _Pump:
    """Results from the consumer thread to the caller's loop, at most STREAM_AHEAD ahead."""

    def __init__(self, run: JobRun, ordered: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.run, self.loop = run, loop
        self.items: deque[Any] = deque()
        self.cond = threading.Condition()
        self.ready = asyncio.Event()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.done = False
        results = run.results()
        self._values = ordered_values(results) if ordered else (v for _, v in results)
        threading.Thread(target=self._run, name="burla-async-stream", daemon=True).start()

    def _run(self) -> None:
        try:
            for value in self._values:
                with self.cond:
                    while len(self.items) >= STREAM_AHEAD and not self.run.abandoned.is_set():
                        self.cond.wait(1.0)
                    if self.run.abandoned.is_set():
                        continue  # draining: results() ends at the Abandoned event
                    self.items.append(value)
                self.loop.call_soon_threadsafe(self.ready.set)
        except BaseException as e:
            self.error = e
        finally:
            self.done = True
            self.loop.call_soon_threadsafe(self.ready.set)
            self.loop.call_soon_threadsafe(_settle, self.finished, True, None)

    async def next(self) -> Any:
        while True:
            with self.cond:
                if self.items:
                    value = self.items.popleft()
                    self.cond.notify()
                    return value
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return _END
                self.ready.clear()
            await self.ready.wait()

    def stop(self) -> None:
        if not self.done:
            self.run.abandon()
            with self.cond:
                self.cond.notify()


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _quietly(fut: asyncio.Future[Any]) -> None:
    """Wait (bounded) for the consumer thread to finish canceling; its outcome is not ours to raise."""
    try:
        await asyncio.wait_for(asyncio.shield(fut), CANCEL_WAIT)
    except BaseException:  # the job's own error, or the wait's end: both moot once cancelled
        pass


@overload
def remote_parallel_map_async(
    function_: Callable[..., Any], inputs: Iterable[Any], func_cpu: int = ..., func_ram: float | None = ...,
    max_parallelism: int | None = ..., generator: Literal[False] = ..., raise_errors: bool = ..., spinner: bool = ...,
    *, ordered: bool | None = ..., max_retries: int = ..., func_timeout: float | None = ..., max_input_bytes: int = ...,
    image: str | None = ..., func_gpu: int | None = ..., init_args: tuple[Any, ...] = ...,
    init_kwargs: dict[str, Any] | None = ...,
) -> Coroutine[Any, Any, list[Any]]: ...


@overload
def remote_parallel_map_async(
    function_: Callable[..., Any], inputs: Iterable[Any], func_cpu: int = ..., func_ram: float | None = ...,
    max_parallelism: int | None = ..., *, generator: Literal[True], raise_errors: bool = ..., spinner: bool = ...,
    ordered: bool | None = ..., max_retries: int = ..., func_timeout: float | None = ..., max_input_bytes: int = ...,
    image: str | None = ..., func_gpu: int | None = ..., init_args: tuple[Any, ...] = ...,
    init_kwargs: dict[str, Any] | None = ...,
) -> AsyncIterator[Any]: ...


def remote_parallel_map_async(
    function_: Callable[..., Any],
    inputs: Iterable[Any],
    func_cpu: int = 1,
    func_ram: float | None = None,
    max_parallelism: int | None = None,
    generator: bool = False,
    raise_errors: bool = True,
    spinner: bool = True,
    *,
    ordered: bool | None = None,
    max_retries: int = 3,
    func_timeout: float | None = None,
    max_input_bytes: int = MAX_INPUT_BYTES,
    image: str | None = None,
    func_gpu: int | None = None,
    init_args: tuple[Any, ...] = (),
    init_kwargs: dict[str, Any] | None = None,
    sync_packages: bool | None = None,
) -> Coroutine[Any, Any, list[Any]] | AsyncIterator[Any]:
    """``remote_parallel_map`` for async code: a coroutine to ``await`` for the
    list (or to wrap in a task), or with ``generator=True`` an async iterator
    for ``async for``.  Same arguments, same errors (bad arguments raise here,
    at the call); the caller's event loop is never blocked, and cancelling the
    awaiting task (or leaving the ``async for``) cancels the job."""
    run = prepare(function_, inputs, func_cpu, func_ram, max_parallelism, raise_errors, spinner, max_retries,
                  func_timeout, max_input_bytes, image, func_gpu, init_args, init_kwargs, sync_packages)
    return _stream(run, bool(ordered)) if generator else _gather(run)
