"""The messages a worker speaks, from msgspec when it is installed, else from
the pure-Python codec (a worker inside a user's image: see _purewire)."""

from __future__ import annotations

import os

try:
    if os.environ.get("BURLA_WORKER_PURE") == "1":  # force the pure codec (tests of user-image workers)
        raise ImportError("BURLA_WORKER_PURE=1")
    import msgspec

    from .messages import (
        EndJob,
        Heartbeat,
        InputBatchView,
        ItemError,
        JobSetupFailed,
        LogBatch,
        LogLine,
        ResultBatch,
        StartJob,
        WorkerHello,
        decode,
        encode_parts,
    )

    DecodeError: type[Exception] = msgspec.DecodeError
    PURE = False
except ImportError:
    from ._purewire import (  # type: ignore[assignment]
        DecodeError,
        EndJob,
        Heartbeat,
        InputBatchView,
        ItemError,
        JobSetupFailed,
        LogBatch,
        LogLine,
        ResultBatch,
        StartJob,
        WorkerHello,
        decode,
        encode_parts,
    )

    PURE = True

__all__ = ["DecodeError", "EndJob", "Heartbeat", "InputBatchView", "ItemError", "JobSetupFailed", "LogBatch",
           "LogLine", "PURE", "ResultBatch", "StartJob", "WorkerHello", "decode", "encode_parts"]
