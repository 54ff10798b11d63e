import msgspec
import pytest

from burla.transport import messages as m


def test_every_message_roundtrips() -> None:
    samples = [
        m.ClientHello(), m.NodeHello("n", "h", 2, 1 << 30, 2), m.WorkerHello(1, 2), m.Welcome("c", 3), m.Heartbeat(),
        m.SubmitJob("j", "f", b"fn", 1, 0, 0, 3, 0.0, True), m.JobAccepted("j", 2, 4),
        m.JobEnded("j", "failed", m.JobError("WorkerCrashed", "x", 3)), m.CancelJob("j", "r"), m.JobNotice("j", "t"),
        m.InputCredit("j", 4), m.InputBatch("j", 0, [1, 2], 0, b"ab"), m.InputsDone("j", 2), m.InputsStored("j", 2), m.ResumeJob("j", 3), m.JobResumed("j", 2, 4), m.JobEndedAck("j"), m.AttachJob("j", 2), m.JobAttached("j", True, 1), m.QueryJob("j"),
        m.JobInfo("j", "done", 3, 3, 1, True, m.JobError("JobFailed", "x")),
        m.ResultBatch("j", 0, [1], [m.ItemError(0, "E", "tb", b"")], [0.1], b"a"), m.ResultAck("j", 1),
        m.LogBatch("j", [m.LogLine(0, 1, "hi")]), m.LogAck("j", 2), m.AssignJob("j", b"f", 2, 0.0, 0), m.StartJob("j", b"f", 0.0),
        m.JobSetupFailed("j", "x"), m.BatchLost("j", 0, -1, "r"), m.ReleaseJob("j"), m.EndJob("j"),
        m.BatchAssigned("j", 0, 1), m.NodeStats(1.5, 10, 20), m.RestartNode(), m.Installing("j", "six 1.16.0", True),
    ]
    assert {type(s) for s in samples} == set(m.Message.__args__)  # type: ignore[attr-defined]
    for msg in samples:
        got = m.decode(m.encode(msg))
        if isinstance(msg, (m.InputBatch, m.ResultBatch)):  # batches decode as zero-copy views
            assert type(got).__name__ == type(msg).__name__ + "View"
            assert bytes(m.payload_view(got.payload)) == msg.payload
            assert m.encode(got) == m.encode(msg)
        else:
            assert got == msg


@pytest.mark.parametrize("size", [0, 10, 5000, 70_000, 1 << 20])
def test_batches_encode_in_parts_without_copying_the_payload(size):
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    msg = m.ResultBatch("j", 3, [size], [], [0.0], payload)
    parts = m.encode_parts(msg)
    if size > 4096:
        assert parts[-1] is payload
    assert b"".join(parts) == msgspec.msgpack.encode(msg)
    assert bytes(m.payload_view(m.decode(b"".join(parts)).payload)) == payload


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
