"""Batches of pickles: many objects in one ``bytes``, splittable without unpickling.

``pack`` pickles each object on its own (one reused cloudpickle Pickler,
memo cleared between objects) into one buffer and records where each pickle
ends.  The head and nodes can therefore split a batch by slicing, and only
the client and the workers ever unpickle.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Iterable

import cloudpickle

from .messages import payload_view

PROTOCOL = pickle.HIGHEST_PROTOCOL


class Packer:
    """Pickles objects one by one into a growing batch."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._pickler = cloudpickle.Pickler(self._buf, protocol=PROTOCOL)
        self.ends: list[int] = []

    @property
    def size(self) -> int:
        return self.ends[-1] if self.ends else 0

    def add(self, obj: Any) -> int:
        """Pickle ``obj``; return its pickled size.  On failure the batch is unchanged."""
        start = self.size
        try:
            self._pickler.dump(obj)
        except BaseException:
            self._buf.seek(start)
            self._buf.truncate()
            self._pickler = cloudpickle.Pickler(self._buf, protocol=PROTOCOL)
            raise
        self._pickler.clear_memo()
        self.ends.append(self._buf.tell())
        return self.ends[-1] - start

    def take(self) -> tuple[list[int], bytes]:
        ends, payload = self.ends, self._buf.getvalue()
        self._buf = io.BytesIO()
        self._pickler = cloudpickle.Pickler(self._buf, protocol=PROTOCOL)
        self.ends = []
        return ends, payload


def pack(objects: Iterable[Any]) -> tuple[list[int], bytes]:
    packer = Packer()
    for obj in objects:
        packer.add(obj)
    return packer.take()


def unpack(ends: list[int], payload: Any) -> list[Any]:
    """Unpickle a batch; ``payload`` is bytes or a received view (msgspec.Raw)."""
    view = payload_view(payload)
    out = []
    start = 0
    for end in ends:
        out.append(pickle.loads(view[start:end]))
        start = end
    return out


def split(ends: list[int], payload: bytes) -> list[tuple[list[int], bytes]]:
    """One (ends, payload) pair per object."""
    parts = []
    start = 0
    for end in ends:
        parts.append(([end - start], payload[start:end]))
        start = end
    return parts
