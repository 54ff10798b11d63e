"""Async connections: own the socket, frame and authenticate, nothing else.

Built on ``asyncio.BufferedProtocol`` so the kernel writes received bytes
straight into the frame decoder's memory (a 1 MiB payload is received into a
1 MiB buffer of its own, no intermediate copies).

``Connection.send`` writes a message and waits for the peer to read once more
than ``write_high_water`` bytes are buffered: a slow reader slows its writer
instead of growing its memory.  Reading pauses when ``max_pending`` decoded
frames wait for ``recv`` and resumes below half of that (hysteresis), so a
fast sender cannot grow a slow consumer either.  ``recv`` returns the next
message other than a heartbeat, and raises ``ConnectionLost`` when the peer
closed, broke the stream, or stayed silent past ``idle_timeout``.  Any
malformed frame raises ``ProtocolError``: the stream position is then
unknown, so the only safe move is to abort the connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import weakref
from collections import deque

import msgspec

from .._errors import AuthenticationError, ClusterUnreachable, ConnectionLost, ProtocolError
from . import _auth
from ._config import TransportConfig
from ._framing import FrameDecoder, ReceiveBudget, frame_message, frame_parts
from ._tls import HEAD_NAME
from .messages import DecodedMessage, Heartbeat, Outgoing, decode, encode, encode_parts

log = logging.getLogger("burla.transport")
_HEARTBEAT_BODY = bytes(encode(Heartbeat()))
_HEARTBEAT = b"".join(frame_message(_HEARTBEAT_BODY))
_NO_FRAMES: deque[bytes | bytearray] = deque(maxlen=0)  # shared by every peer still authenticating
_HANDSHAKE_READ = 128  # bytes read at once before authentication (the longest handshake step is 64)


class _Protocol(asyncio.BufferedProtocol):
    """Receives bytes for one connection; all state for the Connection above."""

    __slots__ = (
        "_budget_paused",
        "_drain_waiter",
        "_hs_read",
        "_reading_paused",
        "_transport_paused",
        "_waiter",
        "_writing_paused",
        "budget",
        "config",
        "decoder",
        "error",
        "frames",
        "handshake",
        "pending_bytes",
        "received_any",
        "transport",
    )

    def __init__(self, config: TransportConfig):
        self.config = config
        self.transport: asyncio.Transport | None = None
        # Until the peer is authenticated it has a few hundred bytes of ours: no frame decoder
        # (its scratch buffer), no task, nothing but this object and its transport (issue 11).
        self.decoder: FrameDecoder | None = None
        self.frames: deque[bytes | bytearray] = _NO_FRAMES  # its own deque once authenticated
        self.handshake: bytearray | None = bytearray()  # raw bytes until authenticated
        self._hs_read = bytearray(_HANDSHAKE_READ)
        self.error: BaseException | None = None
        self.received_any = False
        self.pending_bytes = 0
        self._reading_paused = False  # too many decoded frames wait for recv
        self._budget_paused = False  # the receive budget refused the next frame
        self._transport_paused = False
        self.budget: ReceiveBudget | None = None  # servers share one (see _server)
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    # transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream protocol's transport is a Transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=self.config.write_high_water)  # type: ignore[union-attr]  # set in connection_made, before any data

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.decoder is None:
            return memoryview(self._hs_read)
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.received_any = True
        if self.decoder is None:
            assert self.handshake is not None
            self.handshake += memoryview(self._hs_read)[:nbytes]
            self.handshake_data()
            self._wake()
            return
        try:
            self._accept(self.decoder.buffer_updated(nbytes))
        except ProtocolError as e:
            self._fail(e)

    def _accept(self, frames: list[bytes | bytearray]) -> None:
        for frame in frames:
            if frame == _HEARTBEAT_BODY:
                continue  # its arrival (received_any) is all it says: nobody need wake
            self.frames.append(frame)
            self.pending_bytes += len(frame)
        assert self.decoder is not None
        if self.decoder.blocked and not self._budget_paused:  # the server's receive budget is spent
            self._budget_paused = True
            loop = asyncio.get_running_loop()
            self.budget.wait(self.decoder, lambda: loop.call_soon(self._budget_freed))  # type: ignore[union-attr]  # blocked only with a budget
        if self._over_high_water():
            self._reading_paused = True
        self._apply_reading()
        if self.frames:
            self._wake()

    def _budget_freed(self) -> None:
        self._budget_paused = False
        if self.decoder is None or self.error is not None:
            return
        try:
            self._accept(self.decoder.feed(b""))
        except ProtocolError as e:
            self._fail(e)

    def _apply_reading(self) -> None:
        """Read from the socket unless frames back up here or the budget is spent."""
        paused = self._reading_paused or self._budget_paused
        if paused != self._transport_paused and self.transport is not None and not self.transport.is_closing():
            self._transport_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def handshake_data(self) -> None:
        """Handshake bytes arrived (``self.handshake``); the server side overrides it."""

    def eof_received(self) -> bool:
        self._fail(ConnectionLost("peer closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.decoder is not None:
            self.decoder.close()  # what a half-received message took from the budget comes back
        self._fail(ConnectionLost(f"connection lost: {exc}" if exc else "connection closed"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionLost("connection lost while sending"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # helpers for Connection
    def _fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_data(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _over_high_water(self) -> bool:
        cfg = self.config
        return len(self.frames) >= cfg.max_pending or self.pending_bytes >= cfg.max_pending_bytes

    def take_frame(self) -> bytes | bytearray:
        frame = self.frames.popleft()
        self.pending_bytes -= len(frame)
        cfg = self.config
        if (self._reading_paused and len(self.frames) <= cfg.max_pending // 2
                and self.pending_bytes <= cfg.max_pending_bytes // 2):
            self._reading_paused = False
            self._apply_reading()
        return frame

    async def drain(self) -> None:
        if not self._writing_paused:
            return
        if self._drain_waiter is None or self._drain_waiter.done():
            self._drain_waiter = asyncio.get_running_loop().create_future()
        await self._drain_waiter

    async def read_exactly(self, n: int) -> bytes:
        """Handshake phase only."""
        assert self.handshake is not None
        while len(self.handshake) < n:
            if self.error is not None:
                raise self.error
            await self.wait_data()
        data = bytes(self.handshake[:n])
        del self.handshake[:n]
        return data

    def end_handshake(self) -> None:
        self.decoder = FrameDecoder(self.config.max_frame, self.config.max_message, budget=self.budget)
        self.frames = deque()
        leftover, self.handshake, self._hs_read = self.handshake, None, bytearray()
        if leftover:
            self._accept(self.decoder.feed(leftover))


class _Ticker:
    """One timer per event loop and heartbeat interval for all its connections:
    each tick sends a heartbeat on those that sent nothing since the last one
    and fails those that received nothing for ``idle_timeout``.  (A sleeping
    task and a timeout per receive on every connection cost a head ~50 us per
    idle node per second; issue 10.)"""

    def __init__(self, interval: float):
        self.interval = interval  # (no reference to the loop: it keys _TICKERS weakly)
        self.conns: dict[Connection, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> _Ticker:
        by_interval = _TICKERS.setdefault(loop, {})
        if interval not in by_interval:
            by_interval[interval] = cls(interval)
        return by_interval[interval]

    def add(self, conn: Connection) -> None:
        self.conns[conn] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def discard(self, conn: Connection) -> None:
        self.conns.pop(conn, None)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.conns):
            conn._on_tick(now)
        self._timer = loop.call_later(self.interval, self._tick) if self.conns else None


_TICKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Ticker]] = weakref.WeakKeyDictionary()


class Connection:
    def __init__(self, protocol: _Protocol, peer: str):
        self.peer = peer
        self.config = protocol.config
        self._p = protocol
        self._transport: asyncio.Transport = protocol.transport  # type: ignore[assignment]  # a stream protocol's transport is a Transport
        self._closed = False
        self._sent_since_beat = False
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        self._ticker = _Ticker.of(loop, self.config.heartbeat_interval)
        self._ticker.add(self)

    @property
    def closed(self) -> bool:
        return self._closed or self._transport.is_closing()

    @property
    def write_paused(self) -> bool:
        """More than ``write_high_water`` bytes wait to be written (readable from any thread)."""
        return self._p._writing_paused

    def send_nowait(self, msg: Outgoing) -> None:
        """Queue a message without waiting; for bounded traffic only."""
        if self.closed:
            raise ConnectionLost(f"connection to {self.peer} is closed")
        self._transport.writelines(frame_parts(encode_parts(msg), self.config.max_frame))
        self._sent_since_beat = True

    async def send(self, msg: Outgoing) -> None:
        self.send_nowait(msg)
        await self.drain()

    async def drain(self) -> None:
        """Wait until the write buffer is below the high-water mark."""
        try:
            await self._p.drain()
        except ConnectionLost as e:
            self.abort()
            raise ConnectionLost(f"connection to {self.peer} lost: {e}") from None

    async def recv(self) -> DecodedMessage:
        return (await self.recv_raw())[0]

    async def recv_raw(self) -> tuple[DecodedMessage, bytes | bytearray]:
        """The next message and the encoded body it came from."""
        while True:
            while not self._p.frames:
                await self._fill()
            body = self._p.take_frame()
            try:
                msg = decode(body)
            except (msgspec.DecodeError, RecursionError) as e:  # RecursionError: absurdly deep nesting
                self.abort()
                raise ProtocolError(f"malformed message from {self.peer}: {type(e).__name__}: {e}") from None
            if not isinstance(msg, Heartbeat):
                return msg, body

    async def _fill(self) -> None:
        p = self._p
        if p.error is not None:
            self.abort()
            if isinstance(p.error, ProtocolError):
                raise ProtocolError(f"{self.peer}: {p.error}")
            raise ConnectionLost(f"{self.peer}: {p.error}")
        await p.wait_data()

    def _on_tick(self, now: float) -> None:
        """Heartbeat and liveness, from the loop's ``_Ticker``."""
        if self.closed:
            self._ticker.discard(self)
            return
        if not self._sent_since_beat:
            self._transport.write(_HEARTBEAT)
        self._sent_since_beat = False
        p = self._p
        if p.received_any or p.frames or p._transport_paused:  # bytes we are not reading count as life
            p.received_any = False
            self._last_heard = now
        elif now - self._last_heard > self.config.idle_timeout:
            p._fail(ConnectionLost(f"sent nothing for {self.config.idle_timeout:g}s"))
            self.abort()

    def abort(self) -> None:
        """Drop the connection now, discarding anything unsent."""
        self._closed = True
        self._ticker.discard(self)
        self._transport.abort()

    async def close(self, timeout: float = 2.0) -> None:
        """Flush what was sent (bounded by ``timeout``), then close."""
        if self._closed:
            return
        self._closed = True
        self._ticker.discard(self)
        try:
            async with asyncio.timeout(timeout):
                await self._p.drain()
                self._transport.close()
        except (TimeoutError, ConnectionLost):
            self._transport.abort()


async def _open(loop: asyncio.AbstractEventLoop, host: str, port: int, config: TransportConfig,
                tls: ssl.SSLContext | None) -> _Protocol:
    """TCP to the first address of ``host`` that answers.  The name is resolved
    here, not by ``create_connection``: uvloop's, cancelled by our timeout while
    resolving, leaves a future whose gaierror is "never retrieved" (logged
    during every partition of a Docker node; uvloop issue #437)."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"{host} has no address")
    for family, _, _, _, addr in infos:
        try:
            ip, ip_port = str(addr[0]), int(addr[1])
            _, protocol = await loop.create_connection(
                lambda: _Protocol(config), ip, ip_port, family=family, ssl=tls,
                server_hostname=HEAD_NAME if tls else None,
                ssl_handshake_timeout=config.handshake_timeout if tls else None)
            return protocol
        except ssl.SSLError:
            raise  # a TLS answer: another address would not change it
        except OSError as e:
            error = e
    raise error


async def connect(host: str, port: int, token: str, config: TransportConfig = TransportConfig(),
                  tls: ssl.SSLContext | None = None) -> Connection:
    """Open an authenticated connection to a burla server (over TLS with
    ``tls``, a ``_tls.client_context``: the server must then show a
    certificate of that cluster's CA).

    Raises ClusterUnreachable if nothing burla answers within
    ``config.handshake_timeout`` or the server closes before its challenge
    (refused, overloaded, out of file descriptors: worth retrying), and
    AuthenticationError if it closes after our answer (the token is wrong).
    """
    where = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(config.handshake_timeout):
            protocol = await _open(loop, host, port, config, tls)
    except ssl.SSLCertVerificationError as e:
        raise AuthenticationError(
            f"the server at {where} is not this cluster's head: its TLS certificate is not one of the cluster's "
            f"CA ({e.verify_message}); check the address, or take the CA again from `burla status --ca`") from None
    except ssl.SSLError as e:
        raise ClusterUnreachable(f"{where} does not speak TLS ({e.reason}): a head on loopback or Docker is "
                                 "plaintext, connect to it without a CA") from None
    except socket.gaierror as e:
        raise ClusterUnreachable(f"cannot resolve {host!r}, the burla head's host: {e}") from None
    except (OSError, TimeoutError) as e:
        raise ClusterUnreachable(f"no burla head reachable at {where}: {str(e) or 'timed out'}") from None
    answered = False
    hint = "" if tls else "; a cloud cluster's head speaks TLS only: connect with its CA (burla.connect(..., ca=...))"
    try:
        async with asyncio.timeout(config.handshake_timeout):
            challenge = await protocol.read_exactly(_auth.CHALLENGE_LEN)
            answer = _auth.answer_challenge(token, challenge)
            if answer is None:
                raise ClusterUnreachable(f"{where} is not a burla server")
            nonce_c, response = answer
            protocol.transport.write(response)  # type: ignore[union-attr]  # set in connection_made, before any data
            answered = True
            proof = await protocol.read_exactly(_auth.DIGEST)
            if not _auth.check_server_proof(token, _auth.nonce_of(challenge), nonce_c, proof):
                raise AuthenticationError(f"{where} could not prove it knows the cluster token")
    except ConnectionLost:
        protocol.transport.abort()  # type: ignore[union-attr]  # set in connection_made, before any data
        if not answered:
            raise ClusterUnreachable(f"{where} closed the connection before its handshake "
                                     f"(overloaded or restarting?{hint})") from None
        raise AuthenticationError(
            f"the burla head at {where} rejected our token: check BURLA_TOKEN / burla.connect(token=...)"
        ) from None
    except TimeoutError:
        protocol.transport.abort()  # type: ignore[union-attr]  # set in connection_made, before any data
        raise ClusterUnreachable(f"handshake with {where} timed out (overloaded?{hint})") from None
    except BaseException:
        protocol.transport.abort()  # type: ignore[union-attr]  # set in connection_made, before any data
        raise
    protocol.end_handshake()
    return Connection(protocol, where)
