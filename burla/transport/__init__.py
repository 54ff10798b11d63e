"""Sockets, frames, authentication and the wire messages (the lowest layer).

Nothing here imports the scheduler, the runtime or the client.
"""

from . import messages
from ._config import TransportConfig
from ._connection import Connection, connect, serve
from ._framing import FrameDecoder, frame_message

__all__ = ["Connection", "FrameDecoder", "TransportConfig", "connect", "frame_message", "messages", "serve"]
