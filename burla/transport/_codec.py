"""The messages a worker speaks, from msgspec when it is installed, else from
the pure-Python codec (a worker inside a user's image: see _purewire)."""

from __future__ import annotations

import os
from types import ModuleType

_impl: ModuleType
try:
    if os.environ.get("BURLA_WORKER_PURE") == "1":  # force the pure codec (tests of user-image workers)
        raise ImportError("BURLA_WORKER_PURE=1")
    import msgspec

    from . import messages as _impl

    DecodeError: type[Exception] = msgspec.DecodeError
    PURE = False
except ImportError:
    from . import _purewire as _impl

    DecodeError = _impl.DecodeError
    PURE = True

EndJob = _impl.EndJob
Heartbeat = _impl.Heartbeat
InputBatchView = _impl.InputBatchView
ItemError = _impl.ItemError
JobSetupFailed = _impl.JobSetupFailed
LogAck = _impl.LogAck
LogBatch = _impl.LogBatch
LogLine = _impl.LogLine
ResultBatch = _impl.ResultBatch
StartJob = _impl.StartJob
WorkerHello = _impl.WorkerHello
decode = _impl.decode
encode_parts = _impl.encode_parts

__all__ = [
    "PURE",
    "DecodeError",
    "EndJob",
    "Heartbeat",
    "InputBatchView",
    "ItemError",
    "JobSetupFailed",
    "LogAck",
    "LogBatch",
    "LogLine",
    "ResultBatch",
    "StartJob",
    "WorkerHello",
    "decode",
    "encode_parts",
]
