import msgspec
import pytest

from burla.transport import messages as m


def test_every_message_roundtrips() -> None:
    samples = [
        m.ClientHello(), m.NodeHello("n", "h", 2, 1 << 30, 2), m.WorkerHello(1, 2), m.Welcome("c", 3), m.Heartbeat(),
        m.SubmitJob("j", "f", b"fn", 1, 0, 0, 3, 0.0, True), m.JobAccepted("j", 2, 4),
        m.JobEnded("j", "failed", m.JobError("WorkerCrashed", "x", 3)), m.CancelJob("j", "r"),
        m.InputCredit("j", 4), m.InputBatch("j", 0, [1, 2], b"ab"), m.InputsDone("j", 2),
        m.ResultBatch("j", 0, [1], b"a", [m.ItemError(0, "E", "tb", b"")]), m.ResultAck("j", 1),
        m.LogBatch("j", [m.LogLine(0, 1, "hi")]), m.AssignJob("j", b"f", 2, 0.0, 0), m.StartJob("j", b"f", 0.0),
        m.JobSetupFailed("j", "x"), m.BatchLost("j", 0, -1, "r"), m.ReleaseJob("j"), m.EndJob("j"),
    ]
    assert {type(s) for s in samples} == set(m.Message.__args__)  # type: ignore[attr-defined]
    for msg in samples:
        assert m.decode(m.encode(msg)) == msg


@pytest.mark.parametrize("raw", [
    msgspec.msgpack.encode(["NoSuchMessage", 1]),
    msgspec.msgpack.encode(["InputCredit", "j", "not-an-int"]),
    msgspec.msgpack.encode(["InputCredit", "j"]),
    msgspec.msgpack.encode({"op": "submit"}),
    b"\xc1\xff\x00",
])
def test_malformed_messages_are_rejected(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        m.decode(raw)
