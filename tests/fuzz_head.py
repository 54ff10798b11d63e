"""An authenticated fuzzer for the head's wire protocol (issue 11).

It knows the token, so every byte it sends reaches the decoders and the
scheduler.  Sessions open as a client or as a node (with a fresh id, or the
id of a live node), then send valid messages mutated in type-preserving ways
(odd numbers, foreign ids, bad ranges: they decode and reach HeadState),
with now and then a message mutated past decoding (another type in a field,
a swapped tag, flipped or cut bytes), which must close only that session.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import msgspec

from burla import ConnectionLost
from burla.transport import connect
from burla.transport._framing import frame_message
from burla.transport._payload import pack
from burla.transport.messages import (
    BatchAssigned,
    BatchLost,
    CancelJob,
    ClientHello,
    InputBatch,
    InputCredit,
    InputsDone,
    ItemError,
    JobSetupFailed,
    LogAck,
    LogBatch,
    LogLine,
    NodeHello,
    NodeStats,
    ResultAck,
    ResultBatch,
    SubmitJob,
    encode,
)

INTS = [0, 1, -1, 2, 3, 7, 1023, 1024, 2**31 - 1, 2**31, 2**32, -(2**31), 2**62, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -1.0, 1e-9, 1e308, -1e308, math.inf, -math.inf, math.nan]
STRS = ["", "j0", "j1", "x" * 300, "\x00", "é" * 40, "../../etc/passwd", "<script>alert(1)</script>"]
OTHER = [None, True, [], {}, [1, 2], {"a": 1}, b"\x80\x81", "str", 3.5]


@dataclass
class FuzzStats:
    messages: int = 0  # mutated messages sent after a hello
    sessions: int = 0
    closed_by_head: int = 0  # sessions the head ended (a message it refused)
    takeovers: int = 0  # NodeHellos that reused the live node's id
    kinds: dict[str, int] = field(default_factory=dict)


class Fuzzer:
    def __init__(self, host: str, port: int, token: str, live_node: str, seed: int = 11):
        self.host, self.port, self.token, self.live_node = host, port, token, live_node
        self.rng = random.Random(seed)
        self.stats = FuzzStats()
        self.job_ids = ["j0", "j1", "j2"]
        self._fn = cloudpickle.dumps(abs)

    # --- what is sent ------------------------------------------------------------------------

    def client_seed(self) -> Any:
        r, jid = self.rng, self.rng.choice(self.job_ids)
        ends, payload = pack(range(r.randint(1, 4)))
        return r.choice([
            SubmitJob(jid, "abs", self._fn if r.random() < 0.5 else b"not a pickle", 1, 0, 0, 3, 0.0, True),
            InputBatch(jid, r.choice([0, 0, 1, 4]), ends, 0, bytes(payload)),
            InputsDone(jid, r.randint(0, 8)),
            ResultAck(jid, r.randint(0, 3)),
            LogAck(jid, r.randint(0, 3)),
            CancelJob(jid, "fuzz"),
            InputCredit(jid, 2),  # a head-to-client message, sent the wrong way
        ])

    def node_seed(self) -> Any:
        r, jid = self.rng, self.rng.choice(self.job_ids)
        ends, payload = pack(range(r.randint(1, 3)))
        start = r.choice([0, 0, 1, 2, 4])
        return r.choice([
            ResultBatch(jid, start, ends, [], [0.01] * len(ends), bytes(payload)),
            ResultBatch(jid, start, ends[:1], [ItemError(start, "ValueError", "tb", b"")], [0.0], bytes(payload)),
            LogBatch(jid, [LogLine(start, 1, "hi")]),
            BatchAssigned(jid, start, r.randint(0, 3)),
            NodeStats(50.0, 2**30, 2**32),
            BatchLost(jid, start, r.choice([-1, start]), "fuzz"),
            JobSetupFailed(jid, "fuzz", r.choice(["FunctionLoadError", "WorkerCrashed", "JobFailed", "Nope"])),
        ] + ([SubmitJob(jid, "abs", self._fn, 1, 0, 0, 3, 0.0, True)] if r.random() < 0.1 else []))  # a client's

    def _like(self, value: Any) -> Any:
        """Another value of the same wire type (so it still decodes)."""
        r = self.rng
        if isinstance(value, bool):
            return not value
        if isinstance(value, int):
            return r.choice([*INTS, max(-2 ** 63, min(2 ** 63 - 1, value + r.choice([1, -1])))])
        if isinstance(value, float):
            return r.choice(FLOATS)
        if isinstance(value, str):
            return r.choice(STRS + self.job_ids + [self.live_node])
        if isinstance(value, bytes):
            return r.choice([b"", b"\x00" * 5, r.randbytes(r.randint(1, 64)), value[: len(value) // 2]])
        if isinstance(value, list):
            if value and r.random() < 0.6:
                i = r.randrange(len(value))
                return [*value[:i], self._like(value[i]), *value[i + 1:]]
            return r.choice([[], value * 2, value[::-1], [r.choice(INTS) for _ in range(r.randint(1, 5))]])
        return value

    def mutate(self, msg: Any) -> tuple[bytes, bool]:
        """Encoded bytes of a mutation of ``msg``, and whether it may still decode."""
        r = self.rng
        obj = msgspec.msgpack.decode(encode(msg))  # [tag, field, ...]
        roll = r.random()
        if roll < 0.9:
            for _ in range(r.randint(1, 3)):
                i = r.randrange(1, len(obj))
                obj[i] = self._like(obj[i])
            return msgspec.msgpack.encode(obj), True
        if roll < 0.94:
            obj[r.randrange(1, len(obj))] = r.choice(OTHER)
        elif roll < 0.96:
            obj[0] = r.choice(["NodeHello", "ClientHello", "AssignJob", "Welcome", "Nope", "", "InputBatch"])
        elif roll < 0.98:
            obj = obj[:-1] if r.random() < 0.5 else [*obj, r.choice(OTHER)]
        else:
            data = bytearray(msgspec.msgpack.encode(obj))
            if r.random() < 0.5:
                for _ in range(r.randint(1, 4)):
                    data[r.randrange(len(data))] = r.randrange(256)
            else:
                del data[r.randrange(len(data)):]
            return bytes(data), False
        return msgspec.msgpack.encode(obj), False

    # --- sessions ----------------------------------------------------------------------------

    async def session(self, per_session: int) -> None:
        r = self.rng
        as_node = r.random() < 0.5
        conn = await connect(self.host, self.port, self.token)
        self.stats.sessions += 1
        try:
            if as_node:
                takeover = r.random() < 0.1
                self.stats.takeovers += takeover
                node_id = self.live_node if takeover else f"fuzz-{r.randrange(10**6)}"
                hello = NodeHello(node_id, "127.0.0.1", r.choice([1, 2, 0, -1, 2**40]), 2**30,
                                  r.choice([1, 2, 0, -3, 2**31]))
            else:
                hello = ClientHello()
            conn.send_nowait(hello)
            for _ in range(per_session):
                msg = self.node_seed() if as_node else self.client_seed()
                data, decodes = self.mutate(msg) if r.random() < 0.97 else (bytes(encode(msg)), True)
                conn._transport.writelines(frame_message(data))  # bytes of our choosing, framed
                self.stats.messages += 1
                name = type(msg).__name__
                self.stats.kinds[name] = self.stats.kinds.get(name, 0) + 1
                if not decodes:
                    break  # the head must close us now: what would follow is never read
                if conn.closed:
                    break
                await conn.drain()
            await conn.drain()
            await asyncio.sleep(0)  # let a close from the head land
        except ConnectionLost:
            pass
        finally:
            if conn.closed or conn._p.error is not None:
                self.stats.closed_by_head += 1
            conn.abort()

    async def run(self, messages: int, per_session: int = 400) -> FuzzStats:
        while self.stats.messages < messages:
            await asyncio.gather(*(self.session(per_session) for _ in range(4)))
        return self.stats
