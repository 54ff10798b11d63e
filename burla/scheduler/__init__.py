"""The head: node registry, jobs, queues, routing, JSON API."""

from ._head import Head, HeadAddress
from ._queue import InProcessQueue, QueueBackend
from ._state import HeadConfig, HeadState

__all__ = ["Head", "HeadAddress", "HeadConfig", "HeadState", "InProcessQueue", "QueueBackend"]
