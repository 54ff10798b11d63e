"""Line capture of a worker's sys.stdout/sys.stderr, tagged with the input index.

Lines are shipped by a flusher thread every ``interval`` seconds, and by
``flush()`` before each result batch so a function's output always reaches
the client before its result.  At most ``max_pending`` lines (or
``max_pending_bytes``) wait: past that, ``print`` itself sends, and sending
waits for the worker's log window (``_worker.LogWindow``: batches the client
has not acknowledged yet): a function printing faster than the client can
print is slowed, never buffered without bound and never dropped.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable

from ..transport._codec import LogLine


class LineCapture:
    def __init__(self, send: Callable[[list[LogLine]], None], interval: float = 0.05, max_pending: int = 10_000,
                 max_pending_bytes: int = 256 * 1024) -> None:
        self.index = -1
        self._send = send
        self._lines: list[LogLine] = []
        self._bytes = 0
        self._max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()  # guards _lines
        self._flush_lock = threading.Lock()  # orders take+send against flush()
        self._interval = interval
        self._max_pending = max_pending
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="burla-log-flusher", daemon=True)

    def install(self) -> None:
        sys.stdout = _LineWriter(self, 1)
        sys.stderr = _LineWriter(self, 2)
        self._thread.start()

    def add(self, stream: int, text: str) -> None:
        with self._lock:
            self._lines.append(LogLine(self.index, stream, text))
            self._bytes += len(text)
            full = len(self._lines) >= self._max_pending or self._bytes >= self._max_pending_bytes
        if full:
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                lines, self._lines, self._bytes = self._lines, [], 0
            if lines:
                self._send(lines)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except Exception:  # connection gone: the reader thread ends the process
                return


class _LineWriter(io.TextIOBase):
    def __init__(self, capture: LineCapture, stream: int):
        self._capture = capture
        self._stream = stream
        self._partial = ""

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares an attribute; a read-only property suffices
        return "utf-8"

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        text = self._partial + s
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._capture.add(self._stream, line)
        return len(s)

    def flush(self) -> None:
        if self._partial:
            self._capture.add(self._stream, self._partial)
            self._partial = ""
