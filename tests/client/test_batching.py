"""How the client cuts inputs into batches: one input each until results show how long a call
takes, then about BatchSizer.BATCH_SECONDS of calls per batch (issue 10)."""

from burla.client._pickling import Batcher


def sizes(batcher, n):
    out = []
    for _ in range(n):
        b = batcher.next_batch()
        if b is None:
            break
        out.append(len(b[1]))
    return out


def test_tiny_calls_grow_batches_to_the_cap_whatever_the_cluster_size():
    b = Batcher(range(100_000), max_input_bytes=1 << 20, max_items=1024)
    assert sizes(b, 3) == [1, 1, 1]  # nothing known yet: one per slot
    b.observe([10e-6] * 4)  # print-only calls
    assert sizes(b, 12)[-2:] == [1024, 1024]  # doubling up to the cap, not one message per input


def test_slow_calls_travel_alone_before_and_after_their_first_result():
    b = Batcher(range(1000), max_input_bytes=1 << 20)  # 1,000 one-second calls on 100 slots
    assert sizes(b, 300) == [1] * 300  # a second's worth of credit: no input waits behind another
    b.observe([1.0])
    assert sizes(b, 3) == [1, 1, 1]


def test_calls_of_zero_measured_seconds_still_batch():
    b = Batcher(range(10_000), max_input_bytes=1 << 20)
    b.observe([0.0])
    assert sizes(b, 12)[-1] == 1024
