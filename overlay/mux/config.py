"""Configuration of yamux sessions."""

from __future__ import annotations

from dataclasses import dataclass

from overlay.errors import ConfigError
from overlay.mux.yamux_frames import INITIAL_WINDOW, MAX_DATA_LENGTH

__all__ = ["YamuxConfig"]


@dataclass(frozen=True, slots=True)
class YamuxConfig:
    """Windows and limits of one yamux session (both sides of every stream).

    Defaults follow the spec (256 KiB windows) and the ACK-backlog rule of
    libp2p's yamux page (256 unacknowledged streams each way).

    yamux has no session-wide window (QUIC has one): every stream starts
    with a window the peer may fill at once, so the receive memory of a
    session is bounded by ``(max_inbound_streams + max_outbound_streams) *
    receive_window``, 128 MiB with the defaults.  Lower the stream caps to
    lower it.
    """

    receive_window: int = INITIAL_WINDOW
    """Bytes the peer may send on one stream beyond what our application has
    consumed: the bound on a stream's receive buffer.  Above 256 KiB the
    extra is granted in the SYN/ACK window update, as go/rust libp2p do."""

    max_frame_size: int = 16 * 1024
    """Largest Data payload we send in one frame, so one stream cannot hold
    the connection for long (rust-yamux splits at 16 KiB, go at 64 KiB);
    16 KiB plus the header also fits one Noise message."""

    send_buffer_limit: int = 256 * 1024
    """``drain()`` blocks while a stream holds more bytes than this that the
    window or the connection has not yet let out."""

    max_inbound_streams: int = 256
    """Streams the peer may have open towards us at once; a SYN beyond it is
    answered with RST (the session stays up)."""

    max_outbound_streams: int = 256
    """Streams we may have open towards the peer at once."""

    accept_backlog: int = 256
    """Inbound streams not yet accepted by the application; a SYN beyond it
    is answered with RST.  The libp2p spec asks for at least 256."""

    max_ack_backlog: int = 256
    """Our streams the peer has not yet acknowledged; ``open_stream`` waits
    while this many are pending (the libp2p spec's ACK backlog)."""

    max_pending_pings: int = 16
    """Our pings that may be awaiting an answer at once."""

    max_control_backlog: int = 64 * 1024
    """Bytes of queued control frames (ping answers, window updates, RSTs)
    above which the driver stops reading from the peer until they are sent:
    a peer that never reads cannot make us queue without bound."""

    keepalive_interval: float | None = 30.0
    """Seconds of silence from the peer after which we ping it, so a dead
    connection (or a relay that dropped it) is noticed and NAT bindings stay
    open; None disables.  go and js yamux ping every 30 s."""

    ping_timeout: float = 10.0
    """Seconds a ping may go unanswered: an unanswered keep-alive ends the
    session (``KeepaliveTimeout``), one of ours fails ``ping()``."""

    close_timeout: float = 5.0
    """Seconds ``close()`` keeps sending queued data after its Go Away
    before the session ends regardless (go-yamux waits 5 s too)."""

    def __post_init__(self) -> None:
        if not INITIAL_WINDOW <= self.receive_window <= MAX_DATA_LENGTH:
            raise ConfigError(
                f"receive_window must be between {INITIAL_WINDOW} and {MAX_DATA_LENGTH}"
            )
        if not 1024 <= self.max_frame_size <= MAX_DATA_LENGTH:
            raise ConfigError(f"max_frame_size must be between 1024 and {MAX_DATA_LENGTH}")
        if self.send_buffer_limit < 1:
            raise ConfigError("send_buffer_limit must be positive")
        for name in (
            "max_inbound_streams",
            "max_outbound_streams",
            "accept_backlog",
            "max_ack_backlog",
            "max_pending_pings",
        ):
            value = getattr(self, name)
            if not 1 <= value <= 1 << 20:
                raise ConfigError(f"{name} must be between 1 and 2**20")
        if self.keepalive_interval is not None and not self.keepalive_interval > 0:
            raise ConfigError("keepalive_interval must be positive or None")
        if not self.ping_timeout > 0:
            raise ConfigError("ping_timeout must be positive")
        if not self.close_timeout > 0:
            raise ConfigError("close_timeout must be positive")
        if self.max_control_backlog < 1024:
            raise ConfigError("max_control_backlog must be at least 1024 bytes")
