"""The listening side: admit peers that prove they know the token, cheaply.

Until a peer has answered the challenge it costs us its ``_ServerProtocol``
(a few hundred bytes of buffers), its transport and one timer: no frame
decoder, no task, nothing decoded.  At most ``max_unauthenticated`` such
peers are held at once; a new one evicts the oldest, so a flood of silent
connections cannot exhaust memory or file descriptors, and a real peer --
which answers within a round trip -- still gets in.  Each is closed at
``handshake_timeout`` at the latest.  Closings are logged once per source
address per minute, with a count, not once per connection (issue 11).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import ConnectionLost, ProtocolError
from . import _auth
from ._address import listen_backlog
from ._config import TransportConfig
from ._connection import Connection, _Protocol
from ._framing import ReceiveBudget

log = logging.getLogger("burla.transport")
Handler = Callable[[Connection], Awaitable[None]]
LOG_EVERY = 60.0  # seconds between log lines about one source's refused connections


class SourceLog:
    """One log line per source address per ``LOG_EVERY`` seconds: the first
    refusal is logged at once, later ones are counted into the next line."""

    MAX_SOURCES = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = LOG_EVERY):
        self.clock = clock
        self.every = every
        self._sources: dict[str, tuple[float, int]] = {}  # host -> (time of its last line, closings since)

    def refused(self, host: str, peer: str, why: str) -> None:
        now = self.clock()
        last, quiet = self._sources.get(host, (-self.every, 0))
        if now - last < self.every:
            self._sources[host] = (last, quiet + 1)
            return
        if len(self._sources) >= self.MAX_SOURCES:
            self._sources = {h: v for h, v in self._sources.items() if now - v[0] < self.every}
        self._sources[host] = (now, 0)
        more = f" ({quiet} more from {host} in the last {self.every:g}s)" if quiet else ""
        log.warning("closing %s: %s%s; further closings from %s are counted for %gs",
                    peer, why, more, host, self.every)


class _Gate:
    """What every connection of one ``serve`` shares."""

    def __init__(self, token: str, handler: Handler, config: TransportConfig, budget: ReceiveBudget | None):
        self.token = token
        self.handler = handler
        self.config = config
        self.waiting: dict[_ServerProtocol, None] = {}  # unauthenticated, oldest first
        self.tasks: set[asyncio.Task[None]] = set()
        self.log = SourceLog()
        self.budget = budget or ReceiveBudget(config.receive_budget)

    def admit(self, p: _ServerProtocol) -> None:
        while len(self.waiting) >= self.config.max_unauthenticated:
            oldest = next(iter(self.waiting))
            oldest.refuse(f"evicted: {self.config.max_unauthenticated} connections were waiting to authenticate")
        self.waiting[p] = None

    def authenticated(self, p: _ServerProtocol) -> None:
        self.waiting.pop(p, None)
        task = asyncio.get_running_loop().create_task(self._handle(p))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, p: _ServerProtocol) -> None:
        conn = Connection(p, p.peer)
        try:
            await self.handler(conn)
        except (ConnectionLost, ProtocolError) as e:
            log.info("closing %s: %s", p.peer, e)
        except Exception:
            log.exception("closing %s: handler failed", p.peer)
        finally:
            conn.abort()


class _ServerProtocol(_Protocol):
    """Runs the server's half of the handshake in transport callbacks."""

    __slots__ = ("_deadline", "_nonce", "gate", "host", "peer")

    def __init__(self, gate: _Gate):
        super().__init__(gate.config)
        self.gate = gate
        self.budget = gate.budget
        self.peer = self.host = "?"
        self._nonce = b""
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple):
            self.host, self.peer = str(peername[0]), f"{peername[0]}:{peername[1]}"
        else:
            self.host = self.peer = f"unix:{transport.get_extra_info('sockname')}"
        self.gate.admit(self)
        self._nonce, challenge = _auth.new_challenge()
        transport.write(challenge)  # type: ignore[attr-defined]  # a stream transport
        timeout = self.config.handshake_timeout
        self._deadline = asyncio.get_running_loop().call_later(
            timeout, self.refuse, f"did not authenticate within {timeout:g}s")

    def handshake_data(self) -> None:
        assert self.handshake is not None and self.transport is not None
        if len(self.handshake) < _auth.RESPONSE_LEN:
            return
        proof = _auth.check_response(self.gate.token, self._nonce, bytes(self.handshake[: _auth.RESPONSE_LEN]))
        if proof is None:
            self.refuse("failed authentication (wrong token, or not a burla peer)")
            return
        del self.handshake[: _auth.RESPONSE_LEN]
        self._stop_deadline()
        self.transport.write(proof)
        self.end_handshake()
        self.gate.authenticated(self)

    def refuse(self, why: str) -> None:
        """Close an unauthenticated peer (logged once a minute per source)."""
        if self.handshake is None:
            return
        self._stop_deadline()
        self.gate.waiting.pop(self, None)
        self.gate.log.refused(self.host, self.peer, why)
        assert self.transport is not None
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake is not None and self in self.gate.waiting:
            self.refuse(f"closed before authenticating ({exc or 'end of stream'})")
        super().connection_lost(exc)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


async def serve(host: str | None, port: int | None, token: str, handler: Handler,
                config: TransportConfig = TransportConfig(), sock: socket.socket | None = None,
                budget: ReceiveBudget | None = None, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    """Listen; authenticate each peer, then run ``handler(conn)`` until it returns.

    A peer that fails the handshake is closed before any of its bytes are
    decoded.  ``handler`` errors are logged and close that one connection;
    the server keeps serving the others.  Large messages arriving on all its
    connections share ``budget`` (default: ``config.receive_budget`` bytes).
    With ``tls`` (a ``_tls.server_context``) every peer first completes TLS,
    within ``config.handshake_timeout``, and the token handshake runs inside it.
    """
    loop = asyncio.get_running_loop()
    gate = _Gate(token, handler, config, budget)
    kw: dict[str, Any] = {"backlog": listen_backlog()}
    if tls is not None:
        kw.update(ssl=tls, ssl_handshake_timeout=config.handshake_timeout)
    if sock is not None:  # bound elsewhere; asyncio would listen() on it again with its default of 100
        return await loop.create_server(lambda: _ServerProtocol(gate), sock=sock, **kw)
    return await loop.create_server(lambda: _ServerProtocol(gate), host, port or 0, **kw)
