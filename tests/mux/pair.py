"""Two pure yamux cores wired back to back, as h11's ConnectionPair."""

from __future__ import annotations

import random

from overlay.mux.config import YamuxConfig
from overlay.mux.yamux_events import DataReceived, Event
from overlay.mux.yamux_session import YamuxCore


class CorePair:
    def __init__(
        self,
        client_config: YamuxConfig | None = None,
        server_config: YamuxConfig | None = None,
    ) -> None:
        self.client = YamuxCore(True, client_config or YamuxConfig(), random.Random(1))
        self.server = YamuxCore(False, server_config or YamuxConfig(), random.Random(2))
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []

    def roundtrip(self, now: float = 0.0) -> tuple[list[Event], list[Event]]:
        """Carry bytes both ways until both sides are quiet; return the
        events each side produced (client, server)."""
        client_events: list[Event] = []
        server_events: list[Event] = []
        while True:
            to_server = self.client.data_to_send(1 << 30)
            to_client = self.server.data_to_send(1 << 30)
            client_events += self.client.events()
            server_events += self.server.events()
            if not to_server and not to_client:
                break
            if to_server:
                self.server.receive_data(to_server, now)
            if to_client:
                self.client.receive_data(to_client, now)
        self.client_events += client_events
        self.server_events += server_events
        return client_events, server_events


def data_of(events: list[Event], stream_id: int) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataReceived) and e.stream_id == stream_id)
