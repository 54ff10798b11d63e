"""Async connections: own the socket, frame and authenticate, nothing else.

``Connection.send`` writes a message and waits for the peer to read once more
than ``write_high_water`` bytes are buffered: a slow reader slows its writer
instead of growing its memory.  ``recv`` returns the next message other than a
heartbeat, and raises ``ConnectionLost`` when the peer closed, broke the
stream, or stayed silent past ``idle_timeout``.  Any malformed frame raises
``ProtocolError``: the stream position is then unknown, so the only safe move
is to abort the connection (never to skip and retry).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import Awaitable, Callable

import msgspec

from .._errors import AuthenticationError, ClusterUnreachable, ConnectionLost, ProtocolError
from . import _auth
from ._config import TransportConfig
from ._framing import FrameDecoder, frame_message
from .messages import Heartbeat, Message, decode, encode

log = logging.getLogger("burla.transport")
_HEARTBEAT = encode(Heartbeat())


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, config: TransportConfig):
        self.peer = peer
        self.config = config
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(config.max_frame, config.max_message)
        self._pending: deque[bytes] = deque()
        self._closed = False
        self._sent_since_beat = False
        writer.transport.set_write_buffer_limits(high=config.write_high_water)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._beat_task = asyncio.get_running_loop().create_task(self._beat())

    @property
    def closed(self) -> bool:
        return self._closed or self._writer.is_closing()

    def send_nowait(self, msg: Message) -> None:
        """Queue a message without waiting; for small control messages only."""
        if self.closed:
            raise ConnectionLost(f"connection to {self.peer} is closed")
        self._writer.writelines(frame_message(encode(msg), self.config.max_frame))
        self._sent_since_beat = True

    async def send(self, msg: Message) -> None:
        self.send_nowait(msg)
        if self._writer.transport.get_write_buffer_size() > self.config.write_high_water:
            try:
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as e:
                self.abort()
                raise ConnectionLost(f"connection to {self.peer} lost: {e}") from None

    async def recv(self) -> Message:
        while True:
            while not self._pending:
                await self._fill()
            body = self._pending.popleft()
            try:
                msg = decode(body)
            except msgspec.DecodeError as e:
                self.abort()
                raise ProtocolError(f"malformed message from {self.peer}: {e}") from None
            if not isinstance(msg, Heartbeat):
                return msg

    async def _fill(self) -> None:
        if self._closed:
            raise ConnectionLost(f"connection to {self.peer} is closed")
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                data = await self._reader.read(self.config.read_chunk)
        except TimeoutError:
            self.abort()
            raise ConnectionLost(f"{self.peer} sent nothing for {self.config.idle_timeout:g}s") from None
        except (ConnectionError, OSError) as e:
            self.abort()
            raise ConnectionLost(f"connection to {self.peer} lost: {e}") from None
        if not data:
            self.abort()
            raise ConnectionLost(f"{self.peer} closed the connection")
        try:
            self._pending.extend(self._decoder.feed(data))
        except ProtocolError as e:
            self.abort()
            raise ProtocolError(f"{self.peer}: {e}") from None

    async def _beat(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.config.heartbeat_interval)
            if self.closed:
                return
            if not self._sent_since_beat:
                self._writer.write(b"".join(frame_message(_HEARTBEAT)))
            self._sent_since_beat = False

    def abort(self) -> None:
        """Drop the connection now, discarding anything unsent."""
        self._closed = True
        self._beat_task.cancel()
        self._writer.transport.abort()

    async def close(self, timeout: float = 2.0) -> None:
        """Flush what was sent (bounded by ``timeout``), then close."""
        if self._closed:
            return
        self._closed = True
        self._beat_task.cancel()
        try:
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                self._writer.close()
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError, RuntimeError):
            self._writer.transport.abort()


async def connect(host: str, port: int, token: str, config: TransportConfig = TransportConfig()) -> Connection:
    """Open an authenticated connection to a burla server.

    Raises ClusterUnreachable if nothing burla answers within
    ``config.handshake_timeout`` and AuthenticationError if the token is wrong.
    """
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(config.handshake_timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=config.read_chunk * 2)
    except (OSError, TimeoutError) as e:
        raise ClusterUnreachable(f"no burla head reachable at {where}: {e or 'timed out'}") from None
    try:
        async with asyncio.timeout(config.handshake_timeout):
            challenge = await reader.readexactly(_auth.CHALLENGE_LEN)
            answer = _auth.answer_challenge(token, challenge)
            if answer is None:
                raise ClusterUnreachable(f"{where} is not a burla server")
            nonce_c, response = answer
            writer.write(response)
            proof = await reader.readexactly(_auth.DIGEST)
            if not _auth.check_server_proof(token, _auth.nonce_of(challenge), nonce_c, proof):
                raise AuthenticationError(f"{where} could not prove it knows the cluster token")
    except asyncio.IncompleteReadError:
        writer.transport.abort()
        raise AuthenticationError(
            f"the burla head at {where} rejected our token: check BURLA_TOKEN / burla.connect(token=...)"
        ) from None
    except (OSError, TimeoutError) as e:
        writer.transport.abort()
        raise ClusterUnreachable(f"handshake with {where} failed: {e or 'timed out'}") from None
    except BaseException:
        writer.transport.abort()
        raise
    return Connection(reader, writer, where, config)


Handler = Callable[[Connection], Awaitable[None]]


async def serve(host: str | None, port: int | None, token: str, handler: Handler,
                config: TransportConfig = TransportConfig(), sock: socket.socket | None = None) -> asyncio.Server:
    """Listen; authenticate each peer, then run ``handler(conn)`` until it returns.

    A peer that fails the handshake is closed, with the reason logged, before
    any of its bytes are decoded.  ``handler`` errors are logged and close
    that one connection; the server keeps serving the others.
    """

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await authenticate_and_handle(reader, writer)
        except asyncio.CancelledError:
            # The loop is shutting down.  This is the top of a task that
            # asyncio.streams owns, and its done-callback calls
            # task.exception(), which on Python 3.11 reports a cancelled
            # task as an "unhandled exception": end normally instead.
            writer.transport.abort()

    async def authenticate_and_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "%s:%s" % writer.get_extra_info("peername")[:2]
        try:
            async with asyncio.timeout(config.handshake_timeout):
                nonce_s, challenge = _auth.new_challenge()
                writer.write(challenge)
                response = await reader.readexactly(_auth.RESPONSE_LEN)
                proof = _auth.check_response(token, nonce_s, response)
                if proof is None:
                    log.warning("closing %s: failed authentication", peer)
                    writer.transport.abort()
                    return
                writer.write(proof)
        except (asyncio.IncompleteReadError, TimeoutError, OSError) as e:
            log.info("closing %s: handshake incomplete (%s)", peer, type(e).__name__)
            writer.transport.abort()
            return
        conn = Connection(reader, writer, peer, config)
        try:
            await handler(conn)
        except (ConnectionLost, ProtocolError) as e:
            log.info("closing %s: %s", peer, e)
        except Exception:
            log.exception("closing %s: handler failed", peer)
        finally:
            conn.abort()

    if sock is not None:
        return await asyncio.start_server(on_connect, sock=sock, limit=config.read_chunk * 2)
    return await asyncio.start_server(on_connect, host, port, limit=config.read_chunk * 2)
