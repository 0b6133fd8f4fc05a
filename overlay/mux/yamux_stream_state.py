"""What the yamux core keeps per stream: windows, the send queue, and
where the stream is in its life (pure; ``yamux_session.YamuxCore`` owns
the records and drives them)."""

from __future__ import annotations

import enum
from collections import deque

from overlay.mux.yamux_frames import INITIAL_WINDOW

__all__ = ["StreamRecord", "StreamState"]


class StreamState(enum.Enum):
    SYN_SENT = enum.auto()
    SYN_RECEIVED = enum.auto()
    ESTABLISHED = enum.auto()
    HALF_CLOSED_LOCAL = enum.auto()
    HALF_CLOSED_REMOTE = enum.auto()
    CLOSED = enum.auto()


class StreamRecord:
    """One open stream of a session (a forgotten stream has none)."""

    __slots__ = (
        "id",
        "outbound",
        "acked",
        "accepted",
        "send_window",
        "recv_window",
        "unconsumed",
        "credit",
        "queue",
        "queued",
        "fin_queued",
        "fin_sent",
        "remote_fin",
    )

    def __init__(self, stream_id: int, outbound: bool, recv_window: int) -> None:
        self.id = stream_id
        self.outbound = outbound
        self.acked = False  # outbound: the peer's ACK came; inbound: we sent ours
        self.accepted = outbound
        self.send_window = INITIAL_WINDOW
        # recv_window + unconsumed + credit is always the window we granted.
        self.recv_window = recv_window
        self.unconsumed = 0
        self.credit = 0
        self.queue: deque[memoryview] = deque()
        self.queued = 0
        self.fin_queued = False
        self.fin_sent = False
        self.remote_fin = False

    def sendable(self) -> bool:
        """Data the peer's window lets out, or a FIN still to send."""
        if self.queued:
            return self.send_window > 0
        return self.fin_queued and not self.fin_sent

    def state(self) -> StreamState:
        if self.fin_sent or self.fin_queued:
            return StreamState.HALF_CLOSED_LOCAL
        if self.remote_fin:
            return StreamState.HALF_CLOSED_REMOTE
        if not self.acked:
            return StreamState.SYN_SENT if self.outbound else StreamState.SYN_RECEIVED
        return StreamState.ESTABLISHED

    def take(self, n: int, parts: list[bytes | memoryview]) -> None:
        """Move ``n`` queued bytes (at most ``queued`` and ``send_window``)
        into ``parts``, spending that much send window."""
        # Chunks are memoryviews: cutting a frame off a large write is O(1),
        # never a copy of the remainder; the one copy is the caller's join.
        self.queued -= n
        self.send_window -= n
        queue = self.queue
        while n:
            head = queue[0]
            if len(head) <= n:
                parts.append(head)
                n -= len(head)
                queue.popleft()
            else:
                parts.append(head[:n])
                queue[0] = head[n:]
                n = 0
