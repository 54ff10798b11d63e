"""Sans-IO length-prefixed framing: bytes in, messages out, no sockets.

A frame is a 4-byte big-endian header followed by a body.  The low 31 bits of
the header are the body length (at most ``max_frame``); the top bit says "more
frames of this message follow".  A message larger than ``max_frame`` is thus
sent as several frames and reassembled here, up to ``max_message`` bytes.

Both limits are checked on the header, before anything is allocated, so a
peer announcing a 2 GiB frame costs us nothing but the four header bytes.
"""

from __future__ import annotations

import struct

from .._errors import ProtocolError

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
DEFAULT_MAX_MESSAGE = 1024 * 1024 * 1024

_HEADER = struct.Struct(">I")
_MORE = 0x8000_0000
_LEN_MASK = 0x7FFF_FFFF


def frame_message(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes | memoryview]:
    """Return the chunks to write for one message (header, body, header, body...)."""
    if len(body) <= max_frame:
        return [_HEADER.pack(len(body)), body]
    view = memoryview(body)
    chunks: list[bytes | memoryview] = []
    for pos in range(0, len(body), max_frame):
        part = view[pos : pos + max_frame]
        more = _MORE if pos + max_frame < len(body) else 0
        chunks += [_HEADER.pack(len(part) | more), part]
    return chunks


class FrameDecoder:
    """Accumulates received bytes and returns complete message bodies."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_message: int = DEFAULT_MAX_MESSAGE):
        self.max_frame = max_frame
        self.max_message = max_message
        self._buf = bytearray()
        self._pos = 0
        self._parts: list[bytes] = []
        self._parts_len = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages they complete (maybe none).

        Raises ProtocolError on an oversized frame or message; the decoder is
        unusable afterwards (the stream position is lost: close the connection).
        """
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while len(buf) - self._pos >= 4:
            (header,) = _HEADER.unpack_from(buf, self._pos)
            length = header & _LEN_MASK
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self.max_frame}-byte limit")
            if self._parts_len + length > self.max_message:
                raise ProtocolError(f"message exceeds the {self.max_message}-byte limit")
            end = self._pos + 4 + length
            if len(buf) < end:
                break
            body = bytes(buf[self._pos + 4 : end])
            self._pos = end
            if header & _MORE or self._parts:
                self._parts.append(body)
                self._parts_len += length
                if header & _MORE:
                    continue
                body = b"".join(self._parts)
                self._parts, self._parts_len = [], 0
            out.append(body)
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._parts_len
