"""Wrong tokens per source address: past a few a minute, a source's token
guesses are not even checked until the minute is over (issue 11).

Sans-IO with an injectable clock.  A source is a client address; the table
keeps at most ``MAX_SOURCES`` of them (the oldest quiet ones are dropped).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

MAX_FAILURES = 20  # wrong tokens a source may send per WINDOW
WINDOW = 60.0  # seconds
MAX_SOURCES = 4096


class Attempts:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_failures: int = MAX_FAILURES, window: float = WINDOW):
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def wait(self, source: str) -> float:
        """Seconds before ``source`` may try a token again (0: now)."""
        times = self._failures.get(source)
        if times is None:
            return 0.0
        now = self.clock()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[source]
            return 0.0
        return self.window - (now - times[0]) if len(times) >= self.max_failures else 0.0

    def failed(self, source: str) -> None:
        if source not in self._failures and len(self._failures) >= MAX_SOURCES:
            now = self.clock()
            self._failures = {s: t for s, t in self._failures.items() if t and now - t[-1] < self.window}
        self._failures.setdefault(source, deque(maxlen=self.max_failures)).append(self.clock())
