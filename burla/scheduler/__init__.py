"""The head: node registry, jobs, queues, routing, JSON API."""

from ._head import Head, HeadAddress
from ._queue import BatchQueue, InProcessQueue
from ._state import HeadConfig, HeadState
from .backends import QueueBackend

__all__ = ["BatchQueue", "Head", "HeadAddress", "HeadConfig", "HeadState", "InProcessQueue", "QueueBackend"]
