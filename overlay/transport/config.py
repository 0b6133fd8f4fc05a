"""Configuration of the QUIC transport."""

from __future__ import annotations

import math
from dataclasses import dataclass

from overlay.errors import ConfigError

__all__ = ["TransportConfig"]

_MIN_DATAGRAM = 1200  # RFC 9000 section 14: every QUIC path must carry this
_MAX_DATAGRAM = 65527
# aioquic fails to parse frames in datagrams near 64 KB; 16 KB already cuts
# the per-packet work tenfold against 1200-byte datagrams.
_MAX_LOOPBACK_DATAGRAM = 16384
_MAX_DATAGRAM_FRAME = 65536


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Limits and timers of one QUIC endpoint and its connections."""

    idle_timeout: float = 30.0
    """Seconds without any packet from the peer after which a connection
    is dropped (the smaller of both sides' values applies)."""

    keepalive_interval: float | None = 15.0
    """Seconds between PINGs on an established connection so that it stays
    open across the idle timeout and NAT bindings; ``None`` disables them.
    Must be below ``idle_timeout``."""

    handshake_timeout: float = 10.0
    """Seconds a dial or an inbound handshake may take before it is aborted."""

    confirm_handshake: bool = False
    """If true, ``dial`` returns only after the server confirmed the
    handshake (HANDSHAKE_DONE), so a server that rejects our certificate
    fails the dial itself instead of closing the connection just after it.
    Costs one round trip per dial; libp2p implementations do not wait."""

    max_inbound_streams: int = 256
    """Bidirectional streams the peer may have open towards us at once."""

    stream_receive_window: int = 1 << 20
    """Bytes the peer may send on one stream beyond what our application has
    read; this bounds the receive buffer of a stream."""

    connection_receive_window: int = 4 << 20
    """Bytes the peer may send on all streams together beyond what our
    application has read; this bounds the receive memory of a connection."""

    send_buffer_limit: int = 1 << 20
    """``drain()`` blocks while a stream holds more unacknowledged bytes
    than this."""

    max_datagram_size: int = 1200
    """Largest UDP payload we send.  1200 is safe on every path (there is no
    path-MTU discovery); 1452 is faster where the path allows it."""

    loopback_datagram_size: int = 16384
    """Largest UDP payload we send, once the handshake is done, to a peer on
    a loopback address: that path's MTU is 64 KiB, so the only limit is what
    the peer accepts, which its ``max_udp_payload_size`` transport parameter
    states and which is honoured too.  Handshake packets keep
    ``max_datagram_size``.  Each QUIC packet costs the same Python work
    whatever its size, so this is worth about 6x in bulk throughput on
    loopback.  Set it to ``max_datagram_size`` to turn it off."""

    max_connections: int = 1024
    """Connections (established or handshaking, both directions) per endpoint."""

    max_handshakes: int = 64
    """Inbound handshakes in progress at once; further Initials are dropped."""

    retry_threshold: int = 32
    """Inbound handshakes in progress (from all sources) from which a
    client's Initial without a token is answered by a Retry (RFC 9000
    section 8.1): the client must prove it receives at its address before
    it may hold a handshake slot, so spoofed Initials stop filling them.
    Costs an honest client one round trip.  0: always; at or above
    ``max_handshakes``: never.  The default is half of ``max_handshakes``."""

    retry_token_lifetime: float = 10.0
    """Seconds a Retry token stays valid.  A client returns it within one
    round trip; an expired one is refused with INVALID_TOKEN."""

    max_handshakes_per_ip: int = 8
    """Inbound handshakes in progress from one IP address; beyond it
    Initials are dropped (the client retransmits, and may find room).
    From half of it on, an Initial without a token gets a Retry."""

    max_connections_per_ip: int = 64
    """Inbound connections (handshaking or established) from one IP address;
    beyond it new ones are refused with CONNECTION_REFUSED."""

    max_connections_per_prefix: int = 128
    """Inbound connections from one /24 (IPv4) or /48 (IPv6) network;
    beyond it new ones are refused with CONNECTION_REFUSED.

    Every loopback address is a source of its own (tests and attack
    benches stand for remote hosts with distinct 127.x.y.z addresses), so
    for it this is the same scope as ``max_connections_per_ip``."""

    exempt_own_address: bool = True
    """Let clients whose IP is the endpoint's own bound address (and
    127.0.0.1 / ::1 for an endpoint bound to 0.0.0.0 / ::) past the
    per-IP and per-prefix limits above.  Only processes on this machine send
    from our own address: a lab that runs many nodes on 127.0.0.1 (the
    project's tests run dozens) is not one hostile host.  Other loopback
    addresses stay limited, so a local attacker on 127.0.0.66 is.  The
    global caps and the Retry threshold still apply to them."""

    max_datagram_frame_size: int | None = 65535
    """Largest QUIC DATAGRAM frame (RFC 9221) we accept, announced as the
    ``max_datagram_frame_size`` transport parameter; ``None`` announces no
    datagram support.  Peers that do not know the parameter ignore it (RFC
    9000 section 7.4.2), and one that never sends DATAGRAM frames costs
    nothing, so it is on by default; frames that arrive while nobody set
    ``QuicConn.datagram_handler`` are dropped.  The virtual-IP interface
    (``overlay daemon --tun``) carries IP packets in them."""

    icmp_errors: bool = True
    """Read ICMP port-unreachable errors (Linux ``IP_RECVERR``, asyncio's
    selector loop) so that a dial to, or a connection with, a crashed peer
    fails at once instead of timing out.  Errors are matched to connections
    by the connection ID they quote, so a forged ICMP message cannot end a
    connection."""

    def __post_init__(self) -> None:
        _positive("idle_timeout", self.idle_timeout)
        _positive("handshake_timeout", self.handshake_timeout)
        if self.keepalive_interval is not None:
            _positive("keepalive_interval", self.keepalive_interval)
            if self.keepalive_interval >= self.idle_timeout:
                raise ConfigError("keepalive_interval must be below idle_timeout")
        if not 1 <= self.max_inbound_streams <= 1 << 20:
            raise ConfigError("max_inbound_streams must be between 1 and 2**20")
        if self.stream_receive_window < 1024:
            raise ConfigError("stream_receive_window must be at least 1024 bytes")
        if self.connection_receive_window < self.stream_receive_window:
            raise ConfigError("connection_receive_window must be >= stream_receive_window")
        if self.send_buffer_limit < 1:
            raise ConfigError("send_buffer_limit must be positive")
        if not _MIN_DATAGRAM <= self.max_datagram_size <= _MAX_DATAGRAM:
            raise ConfigError(
                f"max_datagram_size must be between {_MIN_DATAGRAM} and {_MAX_DATAGRAM}"
            )
        if not self.max_datagram_size <= self.loopback_datagram_size <= _MAX_LOOPBACK_DATAGRAM:
            raise ConfigError(
                f"loopback_datagram_size must be between max_datagram_size and {_MAX_LOOPBACK_DATAGRAM}"
            )
        if self.max_datagram_frame_size is not None and not (
                64 <= self.max_datagram_frame_size <= _MAX_DATAGRAM_FRAME):
            raise ConfigError(f"max_datagram_frame_size must be between 64 and {_MAX_DATAGRAM_FRAME}")
        if self.max_connections < 1:
            raise ConfigError("max_connections must be positive")
        if self.max_handshakes < 1:
            raise ConfigError("max_handshakes must be positive")
        if self.retry_threshold < 0:
            raise ConfigError("retry_threshold must not be negative")
        _positive("retry_token_lifetime", self.retry_token_lifetime)
        for name in ("max_handshakes_per_ip", "max_connections_per_ip",
                     "max_connections_per_prefix"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number of seconds")
