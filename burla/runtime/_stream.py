"""A batch's results, streamed: a finished result leaves within ``interval``
(20 ms), not when its whole batch is done (issue 10).

The main thread pickles each result as its call returns (``add``).  A sender
thread sends what has piled up once the oldest unsent result is ``interval``
old, as a ``ResultBatch`` of the consecutive inputs finished so far; the main
thread sends the rest when the batch ends (``finish``).  A batch of tiny
calls is over long before 20 ms, so it still travels as one message (W1);
a batch of slow calls streams one result at a time.  Both threads send under
one lock, so the partial batches of an input batch reach the node in input
order and cover it exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._errors import ResultTooBig
from ..transport._codec import ItemError, ResultBatch
from ..transport._framing import DEFAULT_MAX_MESSAGE
from ..transport._payload import Packer, TooBig

RESULT_INTERVAL = 0.02  # seconds a finished result may wait for the rest of its batch
# One result must fit one message with room to spare; results pile up to FLUSH_BYTES at most
# before they are sent, so a batch of big results never adds up past it either (issue 11: a
# 1.1 GiB result used to crash its worker and be retried forever).
MAX_RESULT_BYTES = DEFAULT_MAX_MESSAGE - (16 << 20)
FLUSH_BYTES = 64 << 20


class ResultStream:
    def __init__(self, send: Callable[[Any], None], before_send: Callable[[], None],
                 interval: float = RESULT_INTERVAL) -> None:
        self._send = send
        self._before_send = before_send  # ships log lines first: output precedes its result
        self._interval = interval
        self._cond = threading.Condition()
        self._packer = Packer()
        self._job_id = ""
        self._start = 0  # index of the first input not yet sent
        self._errors: list[ItemError] = []
        self._durations: list[float] = []
        self._oldest = 0.0  # monotonic time the oldest unsent result finished (0: none)
        self._running = False
        threading.Thread(target=self._run, name="burla-result-sender", daemon=True).start()

    def begin(self, job_id: str, start: int) -> None:
        with self._cond:
            self._job_id, self._start, self._running = job_id, start, True

    def add(self, index: int, result: Any, error: ItemError | None, duration: float) -> None:
        """The call of input ``index`` returned ``result`` (None with ``error``)."""
        with self._cond:
            try:
                self._packer.add(result, limit=MAX_RESULT_BYTES)
            except TooBig as e:
                error = _result_error(index, ResultTooBig(
                    f"the result of input {index} pickles to {e.size / 2**20:.0f} MiB, over the "
                    f"{MAX_RESULT_BYTES / 2**20:.0f} MiB a result may take: write it to storage the "
                    "client can read and return its path"))
                self._packer.add(None)
            except Exception as e:
                error = _result_error(index, TypeError(
                    f"the function returned {type(result).__name__!r} for input {index}, which cannot be pickled: {e}"))
                self._packer.add(None)
            if error is not None:
                self._errors.append(error)
            self._durations.append(duration)
            if not self._oldest:
                self._oldest = time.monotonic()
                self._cond.notify()
            if self._packer.size >= FLUSH_BYTES:  # big results go now: a batch stays one message
                self._flush()

    def finish(self) -> None:
        """The batch is done: send what is left (the sender may have sent it all)."""
        with self._cond:
            self._running = False
            self._flush()

    def _flush(self) -> None:
        if not self._durations:
            return
        self._before_send()
        ends, payload = self._packer.take()
        batch = ResultBatch(self._job_id, self._start, ends, self._errors, self._durations, payload)
        self._start += len(ends)
        self._errors, self._durations, self._oldest = [], [], 0.0
        self._send(batch)

    def _run(self) -> None:
        with self._cond:
            while True:
                while not (self._running and self._oldest):
                    self._cond.wait()
                due = self._oldest + self._interval - time.monotonic()
                if due > 0:
                    self._cond.wait(due)
                    continue
                try:
                    self._flush()
                except Exception:  # connection gone: the reader thread ends the process
                    return


def _result_error(index: int, err: Exception) -> ItemError:
    return ItemError(index, type(err).__name__, str(err), cloudpickle.dumps(err))
