"""A blocking connection, for worker processes that run user code on their
main thread and do I/O from plain threads (no event loop to starve)."""

from __future__ import annotations

import socket
import threading
from collections import deque
from typing import Any

from .._errors import AuthenticationError, ConnectionLost, ProtocolError
from . import _auth
from ._address import parse_address
from ._codec import DecodeError, Heartbeat, decode, encode_parts
from ._config import TransportConfig
from ._framing import FrameDecoder, frame_parts


class BlockingConnection:
    def __init__(self, sock: socket.socket, peer: str, config: TransportConfig):
        self.peer = peer
        self.config = config
        self._sock = sock
        self._decoder = FrameDecoder(config.max_frame, config.max_message)
        self._pending: deque[bytes | bytearray] = deque()
        self._send_lock = threading.Lock()

    @classmethod
    def connect(cls, address: str, token: str, config: TransportConfig = TransportConfig()) -> BlockingConnection:
        """``address`` is ``host:port`` or ``unix:/path/to/socket``."""
        if address.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(config.handshake_timeout)
            sock.connect(address[5:])
        else:
            sock = socket.create_connection(parse_address(address, "a node address"), timeout=config.handshake_timeout)
        where = address
        try:
            challenge = _recv_exactly(sock, _auth.CHALLENGE_LEN)
            answer = _auth.answer_challenge(token, challenge)
            if answer is None:
                raise ProtocolError(f"{where} is not a burla server")
            nonce_c, response = answer
            sock.sendall(response)
            proof = _recv_exactly(sock, _auth.DIGEST)
            if not _auth.check_server_proof(token, _auth.nonce_of(challenge), nonce_c, proof):
                raise AuthenticationError(f"{where} could not prove it knows the cluster token")
        except ConnectionLost:
            sock.close()
            raise AuthenticationError(f"{where} rejected our token") from None
        except BaseException:
            sock.close()
            raise
        # A node that stays silent (its heartbeats stop) for idle_timeout is gone.
        sock.settimeout(config.idle_timeout)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, where, config)

    def send(self, msg: Any) -> None:
        """Send one message (thread-safe), gathering its parts with sendmsg."""
        views = [memoryview(p).cast("B") for p in frame_parts(encode_parts(msg), self.config.max_frame)]
        with self._send_lock:
            try:
                while views:
                    sent = self._sock.sendmsg(views[:512])
                    while views and sent >= len(views[0]):
                        sent -= len(views.pop(0))
                    if sent:
                        views[0] = views[0][sent:]
            except OSError as e:
                raise ConnectionLost(f"connection to {self.peer} lost: {e}") from None

    def recv(self) -> Any:
        while True:
            while not self._pending:
                try:
                    n = self._sock.recv_into(self._decoder.get_buffer())
                except OSError as e:
                    raise ConnectionLost(f"connection to {self.peer} lost: {e}") from None
                if not n:
                    raise ConnectionLost(f"{self.peer} closed the connection")
                self._pending.extend(self._decoder.buffer_updated(n))
            try:
                msg = decode(self._pending.popleft())
            except DecodeError as e:
                raise ProtocolError(f"malformed message from {self.peer}: {e}") from None
            if not isinstance(msg, Heartbeat):
                return msg

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionLost("peer closed during handshake")
        buf += chunk
    return buf
