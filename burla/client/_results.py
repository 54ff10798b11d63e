"""Turning a worker's report of a failed call back into an exception."""

from __future__ import annotations

import pickle
from typing import Any

from .._errors import JOB_ERROR_KINDS, CallTimeout, JobCanceled, JobFailed, RemoteError, RemoteExit
from ..transport._payload import unpack
from ..transport.messages import ItemError, JobError, ResultBatchView


def rebuild(err: ItemError) -> BaseException:
    """The user's exception with its remote traceback, or RemoteError."""
    if err.timeout:
        return CallTimeout(f"input {err.index}: {err.traceback}", err.index)
    exc: BaseException | None = None
    if err.exception:
        try:
            exc = pickle.loads(err.exception)
        except Exception:
            exc = None
    if isinstance(exc, SystemExit):  # (its code from args: rebuilt by tblib, .code is not set again)
        code = exc.args[0] if len(exc.args) == 1 else exc.args or None
        return RemoteExit(code, err.traceback, err.index)
    if not isinstance(exc, Exception):  # KeyboardInterrupt, GeneratorExit...: raised here they would
        # pass for the user's own Ctrl-C or end the program; they are the function's error
        return RemoteError(err.type_name, err.traceback, err.index)
    try:
        exc.burla_input_index = err.index  # type: ignore[attr-defined]  # burla's attribute on the user's exception
        exc.add_note(f"[burla] raised remotely while processing input {err.index}")
    except (AttributeError, TypeError):
        pass
    return exc


def values_of(rb: ResultBatchView, raise_errors: bool) -> list[Any]:
    """A result batch's values; a failed call's exception raised (``raise_errors``) or in its place."""
    values = unpack(rb.ends, rb.payload)
    for err in rb.errors:
        exc = rebuild(err)
        if raise_errors:
            raise exc
        values[err.index - rb.start] = exc
    return values


def job_error(error: JobError | None) -> BaseException:
    if error is None:
        return JobFailed("the job failed without a reason")
    if error.kind == "JobCanceled":
        return JobCanceled(error.message)
    cls = JOB_ERROR_KINDS.get(error.kind, JobFailed)
    index = error.input_index if error.input_index >= 0 else None
    if cls is RemoteError:
        return JobFailed(error.message, index)
    return cls(error.message, index)
