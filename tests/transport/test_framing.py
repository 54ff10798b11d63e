import pytest

from burla import ProtocolError
from burla.transport import FrameDecoder, frame_message


def _wire(*bodies: bytes, max_frame: int = 1024) -> bytes:
    return b"".join(bytes(c) for body in bodies for c in frame_message(body, max_frame))


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, 10**6])
def test_messages_survive_any_chunking(chunk: int) -> None:
    bodies = [b"", b"a", b"x" * 5000, bytes(range(256)) * 9]
    wire = _wire(*bodies)
    dec = FrameDecoder(max_frame=1024, max_message=1 << 20)
    got = []
    for i in range(0, len(wire), chunk):
        got += dec.feed(wire[i : i + chunk])
    assert got == bodies
    assert dec.buffered == 0


def test_large_message_is_split_into_frames() -> None:
    chunks = frame_message(b"y" * 2500, max_frame=1024)
    assert len(chunks) == 6  # three (header, body) pairs
    assert FrameDecoder(1024).feed(b"".join(bytes(c) for c in chunks)) == [b"y" * 2500]


def test_oversized_frame_rejected_from_header_alone() -> None:
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(ProtocolError, match="exceeds"):
        dec.feed((2000).to_bytes(4, "big"))


def test_oversized_reassembled_message_rejected() -> None:
    dec = FrameDecoder(max_frame=1024, max_message=2048)
    with pytest.raises(ProtocolError, match="message exceeds"):
        dec.feed(_wire(b"z" * 4000, max_frame=1024))


def test_truncated_frame_waits_for_more() -> None:
    dec = FrameDecoder()
    wire = _wire(b"hello")
    assert dec.feed(wire[:-1]) == []
    assert dec.feed(wire[-1:]) == [b"hello"]


def test_scratch_buffer_starts_small_and_grows_only_for_busy_connections():
    d = FrameDecoder(scratch_size=128 * 1024)
    assert len(d.get_buffer()) == 2048  # an idle or unauthenticated peer costs 2 KiB, not 128
    frames = b"".join(b"".join(frame_message(b"x" * 100)) for _ in range(3000))
    got, pos = [], 0
    while pos < len(frames):
        buf = d.get_buffer()
        n = min(len(buf), len(frames) - pos)
        buf[:n] = frames[pos : pos + n]
        pos += n
        got += d.buffer_updated(n)
    assert len(got) == 3000 and all(bytes(f) == b"x" * 100 for f in got)
    assert len(d.get_buffer()) == 128 * 1024  # reads that filled it doubled it up to the cap


def test_a_receive_budget_charges_large_messages_before_buffering_and_the_oldest_holder_always_proceeds():
    from burla.transport._framing import ReceiveBudget

    budget = ReceiveBudget(limit=3000)
    a, b = (FrameDecoder(max_frame=1024, direct_threshold=512, budget=budget) for _ in range(2))
    wire = _wire(b"a" * 4000)  # four frames: over the budget on its own
    assert a.feed(wire[:1500]) == [] and budget.used == 2048  # a's first two frames are charged
    woken = []
    assert b.feed(wire[:1500]) == [] and b.blocked and budget.used == 2048  # b may not join: 2048 + 1024 > 3000
    budget.wait(b, lambda: woken.append("b"))
    assert a.feed(wire[1500:]) == [b"a" * 4000]  # the oldest holder goes over the budget and completes
    assert budget.used == 0 and budget.peak == 4000 and woken == ["b"]
    assert b.feed(wire[1500:]) == [b"a" * 4000] and not b.blocked
    assert budget.used == 0


def test_small_whole_messages_are_not_charged_and_a_dead_connection_gives_its_bytes_back():
    from burla.transport._framing import ReceiveBudget

    budget = ReceiveBudget(limit=1 << 20)
    d = FrameDecoder(max_frame=1024, direct_threshold=512, budget=budget)
    assert d.feed(_wire(b"s" * 100, b"t" * 200)) == [b"s" * 100, b"t" * 200] and budget.peak == 0
    d.feed(_wire(b"u" * 3000)[:2000])
    assert budget.used > 0
    d.close()
    assert budget.used == 0
