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
from collections.abc import Callable

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


Buffer = bytes | bytearray | memoryview


def frame_parts(parts: list[Buffer], max_frame: int = DEFAULT_MAX_FRAME) -> list[Buffer]:
    """Like frame_message for a body given as consecutive parts (not joined
    unless the message needs several frames)."""
    total = sum(len(p) for p in parts)
    if total <= max_frame:
        return [_HEADER.pack(total), *parts]
    return list(frame_message(b"".join(parts), max_frame))


class ReceiveBudget:
    """Bytes that all connections of one server may hold in large messages
    still being received (issue 11: one peer could make us buffer 1 GiB
    before any check, and every peer at once).

    A decoder takes its bytes frame by frame, on the frame's header, before
    anything is allocated, and gives them all back when the message is
    complete.  A take that would pass ``limit`` is refused -- the connection
    stops reading until bytes come back -- except for the oldest holder,
    which always proceeds: somebody's message always completes, so waiting
    connections never deadlock, and the bytes held stay below ``limit``
    plus one message.  Frames under the decoder's ``direct_threshold`` that
    are whole messages are not charged (a read's worth, already bounded).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._holders: dict[FrameDecoder, int] = {}  # oldest first
        self._waiting: dict[FrameDecoder, Callable[[], object]] = {}

    def take(self, holder: FrameDecoder, n: int) -> bool:
        oldest = next(iter(self._holders), holder)
        if self.used + n > self.limit and holder is not oldest:
            return False
        self._holders[holder] = self._holders.get(holder, 0) + n
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def wait(self, holder: FrameDecoder, wake: Callable[[], object]) -> None:
        """Call ``wake`` once bytes come back (the holder then takes again)."""
        self._waiting[holder] = wake

    def release(self, holder: FrameDecoder) -> None:
        """Everything ``holder`` took comes back (its message is complete, or it is gone)."""
        self._waiting.pop(holder, None)
        n = self._holders.pop(holder, 0)
        self.used -= n
        if n and self._waiting:
            waiting, self._waiting = self._waiting, {}
            for wake in waiting.values():
                wake()


class FrameDecoder:
    """Accumulates received bytes and returns complete message bodies.

    Two ways in: ``feed(data)`` for bytes read elsewhere, or the zero-copy
    pair ``get_buffer()`` / ``buffer_updated(n)`` for a socket that reads
    straight into our memory (asyncio's BufferedProtocol, ``recv_into``).
    A frame larger than ``direct_threshold`` is received directly into a
    buffer of its exact size, so a big payload is copied once by the kernel
    and never again here.

    The scratch buffer small reads land in starts at ``min_scratch`` bytes and
    doubles, up to ``scratch_size``, each time one read fills it: a busy
    connection reads in large gulps, an idle one (most of a 1,000-node head's,
    or one that never authenticates) costs a few KiB, not 128 (issue 10).

    With a ``budget``, large frames and every frame of a multi-frame message
    are charged to it before they are buffered; when it refuses, decoding
    stops (``blocked``) with the rest of the bytes kept, until ``feed`` is
    called again.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_message: int = DEFAULT_MAX_MESSAGE,
                 scratch_size: int = 128 * 1024, direct_threshold: int = 64 * 1024, min_scratch: int = 2048,
                 budget: ReceiveBudget | None = None):
        self.max_frame = max_frame
        self.max_message = max_message
        self.direct_threshold = direct_threshold
        self.scratch_size = scratch_size
        self._scratch = bytearray(min(min_scratch, scratch_size))
        self._buf = bytearray()
        self._pos = 0
        self._parts: list[bytes | bytearray] = []
        self._parts_len = 0
        self._body: bytearray | None = None  # a large frame being received in place
        self._body_filled = 0
        self._body_more = False
        self.budget = budget
        self.blocked = False  # the budget refused the frame at the head of the buffer
        self._charged = 0  # bytes of the current message taken from the budget
        self._paid = False  # the frame whose header is at _pos was charged

    # --- zero-copy interface ---------------------------------------------------

    def get_buffer(self) -> memoryview:
        if self._body is not None:
            return memoryview(self._body)[self._body_filled :]
        return memoryview(self._scratch)

    def buffer_updated(self, n: int) -> list[bytes | bytearray]:
        if self._body is not None:
            self._body_filled += n
            return self._finish_body() if self._body_filled == len(self._body) else []
        out = self.feed(memoryview(self._scratch)[:n])
        if n == len(self._scratch) < self.scratch_size:
            self._scratch = bytearray(min(2 * n, self.scratch_size))
        return out

    # --- plain interface -----------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | bytearray]:
        """Add received bytes; return the messages they complete (maybe none).

        Raises ProtocolError on an oversized frame or message; the decoder is
        unusable afterwards (the stream position is lost: close the connection).
        """
        out: list[bytes | bytearray] = []
        self.blocked = False
        if self._body is not None:
            take = min(len(data), len(self._body) - self._body_filled)
            self._body[self._body_filled : self._body_filled + take] = data[:take]
            self._body_filled += take
            data = data[take:]
            if self._body_filled < len(self._body):
                return out
            out += self._finish_body()
        buf = self._buf
        buf += data
        while len(buf) - self._pos >= 4:
            (header,) = _HEADER.unpack_from(buf, self._pos)
            length = header & _LEN_MASK
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self.max_frame}-byte limit")
            if self._parts_len + length > self.max_message:
                raise ProtocolError(f"message exceeds the {self.max_message}-byte limit")
            if (self.budget is not None and not self._paid
                    and (length >= self.direct_threshold or header & _MORE or self._parts)):
                if not self.budget.take(self, length):
                    self.blocked = True
                    break
                self._charged += length
                self._paid = True  # (the frame may take several reads: charge it once)
            body_start = self._pos + 4
            end = body_start + length
            if len(buf) < end:
                if length >= self.direct_threshold:  # receive the rest in place
                    self._body = bytearray(length)
                    have = len(buf) - body_start
                    self._body[:have] = memoryview(buf)[body_start:]
                    self._body_filled, self._body_more = have, bool(header & _MORE)
                    self._pos = len(buf)
                    self._paid = False
                break
            body = bytes(memoryview(buf)[body_start:end])
            self._pos = end
            self._paid = False
            out += self._complete(body, bool(header & _MORE))
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        return out

    def _finish_body(self) -> list[bytes | bytearray]:
        body, more = self._body, self._body_more
        self._body = None
        assert body is not None
        return self._complete(body, more)

    def _complete(self, body: bytes | bytearray, more: bool) -> list[bytes | bytearray]:
        if not more and self._charged:
            self._charged = 0
            self.budget.release(self)  # type: ignore[union-attr]  # charged only with a budget
        if not (more or self._parts):
            return [body]
        self._parts.append(body)
        self._parts_len += len(body)
        if more:
            return []
        whole = b"".join(self._parts)
        self._parts, self._parts_len = [], 0
        return [whole]

    def close(self) -> None:
        """The connection is gone: what its unfinished message took comes back."""
        if self.budget is not None:
            self._charged = 0
            self.budget.release(self)

    @property
    def buffered(self) -> int:
        body = len(self._body) if self._body is not None else 0
        return len(self._buf) + self._parts_len + body
