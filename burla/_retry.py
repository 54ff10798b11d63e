"""One retry policy for every loop that tries again: an overall deadline,
full-jitter exponential backoff, and errors that are never retried.

Full jitter (the delay before attempt n+1 is uniform in
``[0, min(cap, base * 2**n)]``) keeps a thousand nodes that lost their head at
the same moment from reconnecting in lockstep.  An exception that is not in
``retry_on``, or that is a ``Fatal``, propagates at once; when the deadline
passes, the last error propagates.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._errors import BurlaError

log = logging.getLogger("burla.retry")
T = TypeVar("T")


class Fatal(BurlaError):
    """Raised by an attempt to say: retrying cannot help."""


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter delay after ``attempt`` (1-based) failures."""
    return float(rng() * min(cap, base * 2 ** (attempt - 1)))


async def retry(attempt: Callable[[], Awaitable[T]], *, retry_on: tuple[type[BaseException], ...], deadline: float,
                base: float = 0.2, cap: float = 2.0, what: str = "operation",
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """``await attempt()`` until it returns, for at most ``deadline`` seconds."""
    end = clock() + deadline
    failures = 0
    while True:
        try:
            return await attempt()
        except Fatal:
            raise
        except retry_on as e:
            failures += 1
            left = end - clock()
            if left <= 0:
                raise
            delay = min(left, backoff(failures, base, cap))
            log.info("%s failed (%s); retrying in %.2fs", what, e, delay)
            await sleep(delay)


def retry_sync(attempt: Callable[[], T], *, retry_on: tuple[type[BaseException], ...], deadline: float,
               base: float = 0.05, cap: float = 1.0, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """``retry`` for blocking callers (the CLI)."""
    end = clock() + deadline
    failures = 0
    while True:
        try:
            return attempt()
        except Fatal:
            raise
        except retry_on:
            failures += 1
            left = end - clock()
            if left <= 0:
                raise
            sleep(min(left, backoff(failures, base, cap)))
