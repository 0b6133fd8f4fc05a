"""Libp2pQuicConnection's 1-RTT send loop against aioquic's, sans-IO.

Two connections exchange datagrams in memory at a fixed, stepped ``now``
(no sockets, no sleeps), optionally losing some, so the tests see every
frame each side builds.
"""

from __future__ import annotations

import datetime
import inspect
import random
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from aioquic.quic.packet_builder import QuicDeliveryState

from overlay.identity import Ed25519PrivateKey
from overlay.transport.aioquic_compat import Libp2pQuicConnection
from overlay.transport.tls import generate_credentials

NOW = datetime.datetime.now(datetime.UTC)
CLIENT_ADDR = ("10.0.0.1", 1000)
SERVER_ADDR = ("10.0.0.2", 2000)
STREAM_WINDOW = 1 << 16
CONNECTION_WINDOW = 1 << 20


class StockLoopConnection(Libp2pQuicConnection):
    """The same connection building packets with aioquic's own loop."""

    _write_application = QuicConnection._write_application


def _config(is_client: bool) -> QuicConfiguration:
    creds = generate_credentials(Ed25519PrivateKey.generate(), NOW)
    return QuicConfiguration(
        is_client=is_client, alpn_protocols=["libp2p"], verify_mode=ssl.CERT_NONE,
        certificate=creds.certificate, private_key=creds.private_key,
        max_data=CONNECTION_WINDOW, max_stream_data=STREAM_WINDOW,
    )


@dataclass
class Link:
    """A client and a server joined by an in-memory, optionally lossy, path."""

    client: Libp2pQuicConnection
    server: Libp2pQuicConnection
    now: float = 0.0
    lose: Callable[[], bool] = lambda: False
    received: dict[int, bytearray] = field(default_factory=dict)
    # (stream ID, offset, length) of each STREAM frame the server received.
    frames: list[tuple[int, int, int]] = field(default_factory=list)
    # The stream IDs each data-carrying datagram the server received held.
    datagrams: list[set[int]] = field(default_factory=list)

    def _deliver(self, src: Libp2pQuicConnection, dst: Libp2pQuicConnection,
                 addr: tuple[str, int]) -> bool:
        moved = False
        for data, _ in src.datagrams_to_send(self.now):
            moved = True
            if self.lose():
                continue
            dst.receive_datagram(data, addr, self.now)
            if dst is self.server:
                self._server_events()
        return moved

    def _server_events(self) -> None:
        streams: set[int] = set()
        while (event := self.server.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived) and event.data:
                buf = self.received.setdefault(event.stream_id, bytearray())
                self.frames.append((event.stream_id, len(buf), len(event.data)))
                buf += event.data
                streams.add(event.stream_id)
                # The application reads at once: windows follow (consume).
                self.server.consume(event.stream_id, len(event.data))
        if streams:
            self.datagrams.append(streams)

    def run(self, done: Callable[[], bool], steps: int = 20000) -> None:
        for _ in range(steps):
            if done():
                return
            moved = self._deliver(self.client, self.server, CLIENT_ADDR)
            moved = self._deliver(self.server, self.client, SERVER_ADDR) or moved
            if not moved:
                timers = [t for t in (self.client.get_timer(), self.server.get_timer())
                          if t is not None]
                self.now = max(self.now + 1e-4, min(timers, default=self.now + 1e-3))
                for conn in (self.client, self.server):
                    timer = conn.get_timer()
                    if timer is not None and timer <= self.now:
                        conn.handle_timer(self.now)
        raise AssertionError("the link did not settle")


def connect(cls: type[Libp2pQuicConnection] = Libp2pQuicConnection,
            lose: Callable[[], bool] = lambda: False) -> Link:
    client = cls(configuration=_config(True), certificate_check=lambda chain: None,
                 max_inbound_streams=16)
    client.connect(SERVER_ADDR, now=0.0)
    first = client.datagrams_to_send(0.0)
    header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
    server = Libp2pQuicConnection(
        configuration=_config(False), certificate_check=lambda chain: None,
        max_inbound_streams=16, original_destination_connection_id=header.destination_cid,
    )
    for data, _ in first:
        server.receive_datagram(data, CLIENT_ADDR, 0.0)
    link = Link(client, server)
    link.run(lambda: client.handshake_confirmed and server.handshake_confirmed)
    link.lose = lose
    return link


def send_streams(link: Link, sizes: list[int], seed: int) -> dict[int, bytes]:
    rng = random.Random(seed)
    sent: dict[int, bytes] = {}
    for size in sizes:
        stream_id = link.client.get_next_available_stream_id()
        data = rng.randbytes(size)
        link.client.send_stream_data(stream_id, data, end_stream=True)
        sent[stream_id] = data
    return sent


def test_send_loop_writes_every_frame_aioquic_writes() -> None:
    """Ours copies aioquic's loop: it must call every frame writer aioquic's does."""
    calls = re.compile(r"self\._write_\w+")
    theirs = set(calls.findall(inspect.getsource(QuicConnection._write_application)))
    ours: set[str] = set()
    for name in ("_write_application", "_write_control_frames", "_write_streams"):
        ours |= set(calls.findall(inspect.getsource(getattr(Libp2pQuicConnection, name))))
    assert theirs <= ours, theirs - ours
    assert list(inspect.signature(QuicConnection._write_application).parameters) == [
        "self", "builder", "network_path", "now"]
    for name in ("_streams_queue", "_pacing_at", "_ping_pending", "_probe_pending",
                 "_datagrams_pending", "_handshake_done_pending", "_host_cids",
                 "_retire_connection_ids", "_streams_blocked_pending", "_remote_max_data",
                 "_remote_max_data_used", "_crypto_streams", "_cryptos", "_spaces"):
        assert name in vars(QuicConnection(configuration=QuicConfiguration(is_client=True))), name


def test_ten_streams_arrive_whole_in_turn_one_stream_per_packet() -> None:
    link = connect()
    sent = send_streams(link, [300_000] * 10, seed=1)
    link.run(lambda: all(len(link.received.get(s, b"")) == len(d) for s, d in sent.items()))
    assert {s: bytes(b) for s, b in link.received.items()} == sent
    # Round robin per packet: the first ten data packets serve ten streams.
    assert len(set().union(*link.datagrams[:10])) == 10
    # A packet holds one stream's data except where a stream's last frame
    # left room for the next (ten ends, at most).
    shared = [d for d in link.datagrams if len(d) > 1]
    assert len(shared) <= 10


def test_full_packets_stop_the_stream_loop() -> None:
    """aioquic offered every stream a frame in every packet; ours stops once
    the packet is full, so with ten busy streams a packet costs one or two
    stream visits, not ten."""
    visits: list[int] = []

    def count(cls: type[Libp2pQuicConnection]) -> float:
        link = connect(cls)
        original = link.client._write_stream_frame
        calls = 0

        def counted(*args: object, **kwargs: object) -> int:
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)  # type: ignore[arg-type]

        setattr(link.client, "_write_stream_frame", counted)
        sent = send_streams(link, [200_000] * 10, seed=2)
        link.run(lambda: all(len(link.received.get(s, b"")) == len(d) for s, d in sent.items()))
        visits.append(calls)
        return calls / len(link.datagrams)

    ours, stock = count(Libp2pQuicConnection), count(StockLoopConnection)
    assert ours < 2.5, visits
    assert stock > 5, visits  # the cost the loop removes is really there


def test_loss_recovery_with_ten_streams() -> None:
    rng = random.Random(3)
    link = connect(lose=lambda: rng.random() < 0.05)
    sent = send_streams(link, [rng.randrange(1, 150_000) for _ in range(10)], seed=3)
    link.run(lambda: all(len(link.received.get(s, b"")) == len(d) for s, d in sent.items()))
    assert {s: bytes(b) for s, b in link.received.items()} == sent


def test_stream_limits_are_visited_only_when_due_and_resent_after_loss() -> None:
    link = connect()
    server = link.server
    visits = 0
    original = server._write_stream_limits

    def counted(*args: object, **kwargs: object) -> None:
        nonlocal visits
        visits += 1
        original(*args, **kwargs)  # type: ignore[arg-type]

    setattr(server, "_write_stream_limits", counted)
    # More than a stream window: the client can only finish if the server's
    # reads (consume) reach it as MAX_STREAM_DATA.
    sent = send_streams(link, [3 * STREAM_WINDOW], seed=4)
    link.run(lambda: all(len(link.received.get(s, b"")) == len(d) for s, d in sent.items()))
    assert {s: bytes(b) for s, b in link.received.items()} == sent
    assert 0 < visits
    (stream_id,) = sent
    before = visits
    # Nothing consumed and nothing lost: a packet visits no stream limits.
    server.send_ping(1)
    link.run(lambda: not server._ping_pending and server.get_timer() is not None
             and visits >= before, steps=5)
    assert visits == before
    # A lost update is due again, and the next packet carries it.
    stream = server._streams[stream_id]
    sent_limit = stream.max_stream_data_local_sent
    server._on_max_stream_data_delivery(QuicDeliveryState.LOST, stream)
    assert stream.max_stream_data_local_sent == 0
    server.send_ping(2)
    assert server.datagrams_to_send(link.now)
    assert stream.max_stream_data_local_sent == sent_limit
    assert visits > before
