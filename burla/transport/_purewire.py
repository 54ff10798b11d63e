"""The worker's messages without msgspec: for workers inside a user's image.

A worker container may run any image with Python >= 3.10, where msgspec (a
compiled extension) is not installed.  The node then mounts burla's pure
Python sources, cloudpickle and tblib, and the worker speaks the same
MessagePack through this small codec instead.  It covers exactly what
``messages.py`` encodes: tagged structs as arrays, str, bin, int, float,
bool, nil and lists.  ``FIELDS`` must match the msgspec structs field for
field; tests/transport/test_purewire.py checks both directions.
"""

from __future__ import annotations

import struct
from typing import Any

# tag -> field names, in wire order (see messages.py)
FIELDS: dict[str, tuple[str, ...]] = {
    "WorkerHello": ("worker_id", "pid", "version"),
    "Heartbeat": (),
    "StartJob": ("job_id", "function", "func_timeout", "paths"),
    "InputBatch": ("job_id", "start", "ends", "attempt", "payload"),
    "EndJob": ("job_id",),
    "ItemError": ("index", "type_name", "traceback", "exception", "timeout"),
    "ResultBatch": ("job_id", "start", "ends", "errors", "durations", "payload"),
    "LogLine": ("index", "stream", "text"),
    "LogBatch": ("job_id", "lines"),
    "LogAck": ("job_id", "batches"),
    "JobSetupFailed": ("job_id", "message", "kind"),
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "WorkerHello": {"version": 1}, "ItemError": {"timeout": False}, "InputBatch": {"attempt": 0},
    "JobSetupFailed": {"kind": "FunctionLoadError"}, "StartJob": {"paths": []},
}


class _Msg:
    __hash__ = None  # type: ignore[assignment]  # compared by value and mutable: unhashable, like msgspec's structs
    __slots__: tuple[str, ...] = ()
    TAG = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = FIELDS[self.TAG]
        values = dict(_DEFAULTS.get(self.TAG, {}))
        values.update(zip(names, args, strict=False))  # trailing fields may take their defaults
        values.update(kwargs)
        for name in names:
            setattr(self, name, values[name])

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in FIELDS[self.TAG])

    def __repr__(self) -> str:
        return f"{self.TAG}({', '.join(f'{n}={getattr(self, n)!r}' for n in FIELDS[self.TAG])})"


def _make(tag: str) -> type[_Msg]:
    return type(tag, (_Msg,), {"__slots__": FIELDS[tag], "TAG": tag, "__match_args__": FIELDS[tag]})


WorkerHello = _make("WorkerHello")
Heartbeat = _make("Heartbeat")
StartJob = _make("StartJob")
InputBatchView = _make("InputBatch")  # payload: a memoryview into the received frame
EndJob = _make("EndJob")
ItemError = _make("ItemError")
ResultBatch = _make("ResultBatch")
LogLine = _make("LogLine")
LogBatch = _make("LogBatch")
LogAck = _make("LogAck")
JobSetupFailed = _make("JobSetupFailed")
_CLASSES = {cls.TAG: cls for cls in (WorkerHello, Heartbeat, StartJob, InputBatchView, EndJob, ItemError,
                                     ResultBatch, LogLine, LogBatch, LogAck, JobSetupFailed)}


class DecodeError(ValueError):
    pass


# --- encoding ----------------------------------------------------------------------------


def encode_parts(msg: _Msg) -> list[bytes | memoryview]:
    """Like messages.encode_parts: a large bytes payload is not copied."""
    out: list[bytes | memoryview] = []
    buf = bytearray()
    _enc(msg, buf, out)
    if buf:
        out.append(bytes(buf))
    return out


def encode(msg: _Msg) -> bytes:
    return b"".join(encode_parts(msg))


def _enc(obj: Any, buf: bytearray, out: list[bytes | memoryview]) -> None:
    if isinstance(obj, _Msg):
        names = FIELDS[obj.TAG]
        _array_header(len(names) + 1, buf)
        _enc(obj.TAG, buf, out)
        for name in names:
            _enc(getattr(obj, name), buf, out)
    elif obj is None:
        buf.append(0xC0)
    elif obj is True or obj is False:
        buf.append(0xC3 if obj else 0xC2)
    elif isinstance(obj, int):
        _int(obj, buf)
    elif isinstance(obj, float):
        buf += b"\xcb" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        data = obj.encode()
        n = len(data)
        buf += (bytes([0xA0 | n]) if n < 32 else b"\xd9" + bytes([n]) if n < 256
                else b"\xda" + struct.pack(">H", n) if n < 65536 else b"\xdb" + struct.pack(">I", n))
        buf += data
    elif isinstance(obj, (bytes, bytearray, memoryview)) or hasattr(obj, "parts"):
        parts = obj.parts if hasattr(obj, "parts") else [obj]  # _payload.Segments
        n = sum(len(p) for p in parts)
        buf += (b"\xc4" + bytes([n]) if n < 256 else b"\xc5" + struct.pack(">H", n) if n < 65536
                else b"\xc6" + struct.pack(">I", n))
        if n > 4096:  # hand big buffers to the socket as they are
            out.append(bytes(buf))
            buf.clear()
            out.extend(parts)
        else:
            for p in parts:
                buf += p
    elif isinstance(obj, (list, tuple)):
        _array_header(len(obj), buf)
        for item in obj:
            _enc(item, buf, out)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__}")


_UNSIGNED = ((0xCC, ">B", 1 << 8), (0xCD, ">H", 1 << 16), (0xCE, ">I", 1 << 32), (0xCF, ">Q", 1 << 64))
_SIGNED = ((0xD0, ">b", -(1 << 7)), (0xD1, ">h", -(1 << 15)), (0xD2, ">i", -(1 << 31)), (0xD3, ">q", -(1 << 63)))


def _array_header(n: int, buf: bytearray) -> None:
    if n < 16:
        buf.append(0x90 | n)
    else:
        buf += b"\xdc" + struct.pack(">H", n) if n < 65536 else b"\xdd" + struct.pack(">I", n)


def _int(v: int, buf: bytearray) -> None:
    if 0 <= v < 128:
        buf.append(v)
    elif -32 <= v < 0:
        buf.append(v & 0xFF)
    elif v >= 0:
        for code, fmt, hi in _UNSIGNED:
            if v < hi:
                buf += bytes([code]) + struct.pack(fmt, v)
                return
        raise OverflowError(v)
    else:
        for code, fmt, lo in _SIGNED:
            if v >= lo:
                buf += bytes([code]) + struct.pack(fmt, v)
                return
        raise OverflowError(v)


# --- decoding ---------------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview) -> Any:
    view = memoryview(data)
    try:
        obj, end = _dec(view, 0)
    except (IndexError, struct.error, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DecodeError(f"malformed message: {e}") from None
    if end != len(view):
        raise DecodeError("trailing bytes after the message")
    if not isinstance(obj, _Msg):
        raise DecodeError(f"not a worker message: {type(obj).__name__}")
    return obj


def _dec(v: memoryview, i: int) -> tuple[Any, int]:
    b = v[i]
    i += 1
    if b < 0x80:
        return b, i
    if b >= 0xE0:
        return b - 0x100, i
    if 0x90 <= b <= 0x9F:
        return _array(v, i, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        n = b & 0x1F
        return str(v[i : i + n], "utf-8"), i + n
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if b in simple:
        return simple[b], i
    if b in (0xC4, 0xC5, 0xC6):  # bin: a zero-copy view
        size = {0xC4: 1, 0xC5: 2, 0xC6: 4}[b]
        n = int.from_bytes(v[i : i + size], "big")
        i += size
        if i + n > len(v):
            raise IndexError("bin past the end")
        return v[i : i + n], i + n
    if b in (0xD9, 0xDA, 0xDB):
        size = {0xD9: 1, 0xDA: 2, 0xDB: 4}[b]
        n = int.from_bytes(v[i : i + size], "big")
        i += size
        return str(v[i : i + n], "utf-8"), i + n
    if b in (0xDC, 0xDD):
        size = 2 if b == 0xDC else 4
        return _array(v, i + size, int.from_bytes(v[i : i + size], "big"))
    fmts = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
            0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
    if b in fmts:
        fmt = fmts[b]
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, v[i : i + n])[0], i + n
    raise TypeError(f"unsupported MessagePack type 0x{b:02x}")


def _array(v: memoryview, i: int, n: int) -> tuple[Any, int]:
    items = []
    for _ in range(n):
        item, i = _dec(v, i)
        items.append(item)
    if items and isinstance(items[0], str) and items[0] in _CLASSES:
        cls = _CLASSES[items[0]]
        if len(items) - 1 != len(FIELDS[cls.TAG]):
            raise TypeError(f"{items[0]} has {len(items) - 1} fields, expected {len(FIELDS[cls.TAG])}")
        return cls(*items[1:]), i
    return items, i


def payload_view(payload: Any) -> memoryview:
    return memoryview(payload)
