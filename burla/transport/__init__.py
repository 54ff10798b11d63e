"""Sockets, frames, authentication and the wire messages (the lowest layer).

Nothing here imports the scheduler, the runtime or the client.  Names are
loaded on first use, so a worker in a user's image (no msgspec) can import
the framing and its pure-Python codec without the asyncio/msgspec parts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typed for checkers; loaded lazily at run time (see __getattr__)
    from . import messages
    from ._config import TransportConfig
    from ._connection import Connection, connect
    from ._framing import FrameDecoder, frame_message
    from ._server import serve

__all__ = ["Connection", "FrameDecoder", "TransportConfig", "connect", "frame_message", "messages", "serve"]
_WHERE = {"Connection": "._connection", "connect": "._connection", "serve": "._server",
          "FrameDecoder": "._framing", "frame_message": "._framing", "TransportConfig": "._config",
          "messages": ".messages"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'burla.transport' has no attribute {name!r}")
    module = importlib.import_module(_WHERE[name], __name__)
    return module if name == "messages" else getattr(module, name)
