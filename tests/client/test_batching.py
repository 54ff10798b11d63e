"""How the client cuts inputs into batches: by count until results show how long a call takes,
then about Batcher.BATCH_SECONDS of calls per batch (issue 10)."""

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
    b = Batcher(range(100_000), target_items=1, max_input_bytes=1 << 20, max_items=1024)  # 10,000 slots: 1 each
    assert sizes(b, 3) == [1, 1, 1]
    b.observe([10e-6] * 4)  # print-only calls
    assert sizes(b, 12)[-2:] == [1024, 1024]  # doubling up to the cap, not one message per input


def test_slow_calls_travel_alone_even_when_counting_asked_for_more():
    b = Batcher(range(40), target_items=5, max_input_bytes=1 << 20)  # 40 calls on 2 workers
    assert sizes(b, 1) == [5]
    b.observe([1.0])
    assert sizes(b, 3) == [1, 1, 1]  # one per free slot: none waits behind another in a batch
