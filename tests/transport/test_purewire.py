"""The pure-Python worker codec speaks exactly what msgspec speaks."""

import msgspec
import pytest

from burla.transport import _purewire as pure
from burla.transport import messages as m
from burla.transport._payload import Segments, unpack

SAMPLES = [
    m.WorkerHello(3, 1234), m.Heartbeat(), m.StartJob("job-1", b"\x80\x05fn" * 100, 2.5),
    m.InputBatch("job-1", 10, [3, 7], 0, b"abcdefg"), m.InputBatch("j", -5, [], 2, b"x" * 70_000),
    m.EndJob("job-1"),
    m.ResultBatch("job-1", 300, [1, 2 ** 33], [m.ItemError(301, "builtins.ValueError", "tb ü", b"", True)],
                  [0.25, 1e-9], b"\x00" * 5000),
    m.LogBatch("j", [m.LogLine(-1, 2, "hello <b>"), m.LogLine(2 ** 40, 1, "x" * 300)]),
    m.JobSetupFailed("j", "msg", "JobFailed"),
]


def test_field_tables_match_the_msgspec_structs():
    for tag, fields in pure.FIELDS.items():
        struct = {"InputBatch": m.InputBatch, "ResultBatch": m.ResultBatch}.get(tag) or getattr(m, tag)
        assert struct.__struct_fields__ == fields, tag


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: type(x).__name__)
def test_msgspec_to_pure_and_back(msg):
    wire = m.encode(msg)
    got = pure.decode(wire)
    assert type(msg).__name__ == got.TAG
    for name in pure.FIELDS[got.TAG]:
        mine, theirs = getattr(got, name), getattr(msg, name)
        if isinstance(mine, memoryview):
            mine = bytes(mine)
        if name in ("errors", "lines"):
            mine = [pure.encode(x) for x in mine]
            theirs = [m.encode(x) for x in theirs]
        assert mine == theirs, name
    assert pure.encode(got) == wire  # and the pure encoder writes the very same bytes


def test_pure_payload_segments_are_not_copied():
    big = b"y" * 100_000
    msg = pure.ResultBatch("j", 0, [len(big)], [], [0.1], Segments([big], len(big)))
    parts = pure.encode_parts(msg)
    assert any(p is big for p in parts)
    back = m.decode(b"".join(parts))
    assert bytes(m.payload_view(back.payload)) == big


def test_pure_decoder_rejects_garbage():
    for raw in (b"\xc1", b"\x92\xa9InputBatch", msgspec.msgpack.encode(["InputBatch", "j"]), b"\x91\xa9Heartbeat\x00"):
        with pytest.raises(pure.DecodeError):
            pure.decode(raw)


def test_unpack_accepts_pure_views():
    from burla.transport._payload import pack

    ends, payload = pack([1, "two", b"3"])
    got = pure.decode(m.encode(m.InputBatch("j", 0, ends, 0, payload)))
    assert unpack(got.ends, got.payload) == [1, "two", b"3"]
