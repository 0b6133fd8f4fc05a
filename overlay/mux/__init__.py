"""Stream multiplexing over a single byte stream: yamux (``/yamux/1.0.0``).

``yamux_frames`` (header codec), ``yamux_session`` (the protocol) and
``yamux_stream_state`` (what it keeps per stream) are pure; ``yamux`` is the asyncio driver that runs them over a ``ByteStream``.
"""

from overlay.mux.config import YamuxConfig
from overlay.mux.yamux import PROTOCOL_ID, YamuxSession, YamuxStream
from overlay.mux.yamux_frames import YamuxProtocolError
from overlay.mux.yamux_events import (
    AckBacklogFull,
    GoingAway,
    KeepaliveTimeout,
    SessionClosed,
    TooManyStreams,
)

__all__ = [
    "PROTOCOL_ID",
    "YamuxConfig",
    "YamuxSession",
    "YamuxStream",
    "YamuxProtocolError",
    "SessionClosed",
    "GoingAway",
    "KeepaliveTimeout",
    "TooManyStreams",
    "AckBacklogFull",
]
