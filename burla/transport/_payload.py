"""Batches of pickles: many objects in one ``bytes``, splittable without unpickling.

``pack`` pickles each object on its own (one reused cloudpickle Pickler,
memo cleared between objects) into one buffer and records where each pickle
ends.  The head and nodes can therefore split a batch by slicing, and only
the client and the workers ever unpickle.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from typing import Any

import cloudpickle

PROTOCOL = pickle.HIGHEST_PROTOCOL


# bytes objects at least this big are not copied into the batch: the batch
# keeps a reference and the socket write gathers them (W3, issue #3).
ZERO_COPY_BYTES = 64 * 1024


class Segments:
    """A payload made of several buffers, written one after the other."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, parts: list[bytes], nbytes: int):
        self.parts = parts
        self.nbytes = nbytes

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def _bytes_pickle_header(n: int) -> bytes:
    # PROTO 5 + BINBYTES/BINBYTES8: exactly what pickle.loads reads back as bytes
    if n < 2**32:
        return b"\x80\x05B" + n.to_bytes(4, "little")
    return b"\x80\x05\x8e" + n.to_bytes(8, "little")


class TooBig(Exception):
    """An object pickled to more than the limit it was added under."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


class Packer:
    """Pickles objects one by one into a growing batch."""

    def __init__(self) -> None:
        self._segments: list[bytes] = []
        self._base = 0
        self._new_buffer()
        self.ends: list[int] = []

    def _new_buffer(self) -> None:
        self._buf = io.BytesIO()
        self._pickler = cloudpickle.Pickler(self._buf, protocol=PROTOCOL)

    @property
    def size(self) -> int:
        return self._base + self._buf.tell()

    def add(self, obj: Any, limit: int | None = None) -> int:
        """Pickle ``obj``; return its pickled size.  On failure, or past ``limit``
        bytes (``TooBig``), the batch is unchanged."""
        start = self.size
        if type(obj) is bytes and len(obj) >= ZERO_COPY_BYTES:
            if limit is not None and len(obj) > limit:
                raise TooBig(len(obj))
            self._flush()
            header = _bytes_pickle_header(len(obj))
            self._segments += [header, obj, b"."]
            self._base += len(header) + len(obj) + 1
        else:
            mark = self._buf.tell()
            try:
                self._pickler.dump(obj)
                if limit is not None and self._buf.tell() - mark > limit:
                    raise TooBig(self._buf.tell() - mark)
            except BaseException:
                self._buf.seek(mark)
                self._buf.truncate()
                self._pickler = cloudpickle.Pickler(self._buf, protocol=PROTOCOL)
                raise
            self._pickler.clear_memo()
        self.ends.append(self.size)
        return self.ends[-1] - start

    def _flush(self) -> None:
        if self._buf.tell():
            data = self._buf.getvalue()
            self._segments.append(data)
            self._base += len(data)
            self._new_buffer()

    def take(self) -> tuple[list[int], bytes | Segments]:
        self._flush()
        ends, segments, nbytes = self.ends, self._segments, self._base
        self._segments, self._base, self.ends = [], 0, []
        if len(segments) == 1:
            return ends, segments[0]
        if not segments:
            return ends, b""
        return ends, Segments(segments, nbytes)


def pack(objects: Iterable[Any]) -> tuple[list[int], bytes | Segments]:
    packer = Packer()
    for obj in objects:
        packer.add(obj)
    return packer.take()


def join(pickled: list[bytes | Segments]) -> tuple[list[int], bytes | Segments]:
    """One batch from objects pickled apart (each one ``Packer.take()``'s payload), uncopied."""
    parts: list[bytes] = []
    ends: list[int] = []
    size = 0
    for one in pickled:
        parts += one.parts if isinstance(one, Segments) else [one]
        size += len(one)
        ends.append(size)
    return ends, parts[0] if len(parts) == 1 else Segments(parts, size)


def payload_view(payload: Any) -> memoryview:
    """A batch payload as a zero-copy memoryview: bytes, a memoryview, or a
    received msgspec.Raw (whose MessagePack bin header is skipped)."""
    if type(payload).__name__ == "Raw":
        from .messages import payload_view as raw_view

        return raw_view(payload)
    return memoryview(payload)


def pickles(ends: list[int], payload: Any) -> list[memoryview]:
    """The pickle of each object of a batch, not yet loaded."""
    view = payload_view(payload)
    starts = [0, *ends[:-1]]
    return [view[a:b] for a, b in zip(starts, ends, strict=True)]


def unpack(ends: list[int], payload: Any) -> list[Any]:
    """Unpickle a batch; ``payload`` is bytes or a received view (msgspec.Raw)."""
    return [pickle.loads(data) for data in pickles(ends, payload)]
