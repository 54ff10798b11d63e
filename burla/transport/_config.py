from __future__ import annotations

from dataclasses import dataclass

from ._framing import DEFAULT_MAX_FRAME, DEFAULT_MAX_MESSAGE


@dataclass(frozen=True)
class TransportConfig:
    """Limits and timings of every burla connection.

    max_frame:          largest frame body; bigger messages are split.
    max_message:        largest reassembled message a peer may send us.
    write_high_water:   bytes buffered in the kernel+transport before ``send``
                        waits for the peer to read (outbound backpressure).
    read_chunk:         bytes read from the socket at once (blocking connections).
    max_pending:        decoded frames waiting for ``recv`` before reading pauses
    max_pending_bytes:  ... or their total size (a frame larger than this is
                        still received whole: the limit is then one frame).
    heartbeat_interval: seconds between heartbeats on an otherwise quiet link.
    idle_timeout:       a peer silent this long is dead (several heartbeats).
    handshake_timeout:  seconds allowed for connect + authentication (a server
                        closes a peer that has not authenticated by then).
    max_unauthenticated: peers a server holds before they authenticate; one
                        more evicts the oldest (a flood of silent connections
                        costs at most this many, ~3 KiB each).
    receive_budget:     bytes a server's connections together may hold in large
                        messages still arriving; past it they wait (reading
                        paused), but for the oldest holder (_framing.ReceiveBudget).
    """

    max_frame: int = DEFAULT_MAX_FRAME
    max_message: int = DEFAULT_MAX_MESSAGE
    write_high_water: int = 4 * 1024 * 1024
    read_chunk: int = 1024 * 1024
    max_pending: int = 256
    max_pending_bytes: int = 8 * 1024 * 1024
    heartbeat_interval: float = 1.0
    idle_timeout: float = 6.0
    handshake_timeout: float = 5.0
    max_unauthenticated: int = 1024
    receive_budget: int = 2 * 1024 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_frame < 1024 or self.max_frame > 0x7FFF_FFFF:
            raise ValueError("max_frame must be between 1 KiB and 2 GiB")
        if self.idle_timeout <= self.heartbeat_interval:
            raise ValueError("idle_timeout must exceed heartbeat_interval")
