"""Inbound stream caps of the host: per peer across its connections, per
source (IP prefix), per protocol and in total; refused streams are reset
and their QUIC stream credit comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from overlay.errors import OverlayError
from overlay.host import Host, HostConfig, NegotiatedStream
from overlay.host.connmgr import InboundStreams, StreamSlot
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.limits import LimitHits
from overlay.transport import TransportConfig

HOLD = "/test/hold/1.0.0"
OTHER = "/test/other/1.0.0"


def _peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


# -- the pure accounting ------------------------------------------------------------


def test_each_scope_refuses_with_its_own_cause() -> None:
    caps = InboundStreams(total=5, per_source=3, per_peer=2, per_protocol=2)
    a, b, c = _peer(), _peer(), _peer()
    held = [caps.admit(a, "lo:127.0.0.2"), caps.admit(a, "lo:127.0.0.2")]
    assert all(isinstance(slot, StreamSlot) for slot in held)
    assert caps.admit(a, "lo:127.0.0.3") == "host.streams_per_peer"
    assert isinstance(caps.admit(b, "lo:127.0.0.2"), StreamSlot)
    assert caps.admit(c, "lo:127.0.0.2") == "host.streams_per_source"
    assert isinstance(caps.admit(c, None), StreamSlot)  # exempt source
    assert isinstance(caps.admit(c, "lo:127.0.0.4"), StreamSlot)
    assert caps.admit(_peer(), None) == "host.streams_total"
    assert len(caps) == 5 and caps.held_by(a) == 2 and caps.held_from("lo:127.0.0.2") == 3


def test_protocol_scope_and_release_once() -> None:
    caps = InboundStreams(total=10, per_source=10, per_peer=10, per_protocol=1)
    first, second = caps.admit(_peer(), None), caps.admit(_peer(), None)
    assert isinstance(first, StreamSlot) and isinstance(second, StreamSlot)
    assert caps.negotiated(first, HOLD) is None
    assert caps.negotiated(second, HOLD) == "host.streams_per_protocol"
    assert caps.negotiated(second, OTHER) is None
    assert caps.held_for(HOLD) == 1
    caps.release(first)
    caps.release(first)  # idempotent: counts never go below what is held
    assert caps.held_for(HOLD) == 0 and len(caps) == 1 and caps.held_by(first.peer) == 0
    caps.release(second)
    assert len(caps) == 0 and caps.held_for(OTHER) == 0
    with pytest.raises(ValueError):
        caps.negotiated(second, HOLD)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InboundStreams(total=0, per_source=1, per_peer=1, per_protocol=1)
    with pytest.raises(ValueError):
        HostConfig(max_inbound_streams_per_peer=0)


# -- over QUIC on loopback ------------------------------------------------------------


class Holder:
    """A handler that holds each stream until the peer ends it."""

    def __init__(self) -> None:
        self.open = 0
        self.changed = asyncio.Event()

    async def __call__(self, stream: NegotiatedStream) -> None:
        self.open += 1
        self.changed.set()
        try:
            while await stream.read():
                pass
        except OverlayError:
            pass
        finally:
            self.open -= 1
            self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def _server(quic_hosts, config: HostConfig) -> tuple[Host, Holder]:  # type: ignore[no-untyped-def]
    host, _ = await quic_hosts(config)
    holder = Holder()
    host.set_stream_handler(HOLD, holder)
    host.set_stream_handler(OTHER, holder)
    return host, holder


async def _client(quic_hosts, ip: str, server: Host) -> Host:  # type: ignore[no-untyped-def]
    host, _ = await quic_hosts(None, (f"/ip4/{ip}/udp/0/quic-v1",))
    await host.connect(f"{server.listen_addrs()[0]}/p2p/{server.peer_id}")
    return host


async def _open(client: Host, server: Host, count: int, protocol: str = HOLD
                ) -> tuple[list[NegotiatedStream], int]:
    held, refused = [], 0
    for _ in range(count):
        try:
            held.append(await client.new_stream(server.peer_id, [protocol]))
        except OverlayError:
            refused += 1
    return held, refused


async def test_streams_per_peer_are_capped_and_come_back(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    # QUIC allows 8 streams a connection: refused streams must give their
    # credit back, or the 9th open would wait forever.
    config = HostConfig(transport=TransportConfig(max_inbound_streams=8),
                        max_inbound_streams_per_peer=3)
    server, holder = await _server(quic_hosts, config)
    client = await _client(quic_hosts, "127.0.0.2", server)
    async with asyncio.timeout(20):
        held, refused = await _open(client, server, 20)
        assert (len(held), refused) == (3, 17)
        await holder.wait_for(lambda: holder.open == 3)
        assert server.limit_hits.snapshot() == {"host.streams_per_peer": 17}
        assert server.inbound_streams == 3
        for stream in held:
            await stream.close()
        await holder.wait_for(lambda: holder.open == 0)
        assert server.inbound_streams == 0
        again, refused = await _open(client, server, 3)
        assert (len(again), refused) == (3, 0)


async def test_streams_per_source_count_every_peer_there(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    config = HostConfig(max_inbound_streams_per_source=3)
    server, holder = await _server(quic_hosts, config)
    first = await _client(quic_hosts, "127.0.0.3", server)
    second = await _client(quic_hosts, "127.0.0.3", server)
    elsewhere = await _client(quic_hosts, "127.0.0.4", server)
    own = await _client(quic_hosts, "127.0.0.1", server)  # the server's own address: exempt
    async with asyncio.timeout(20):
        assert (await _open(first, server, 2))[1] == 0
        held, refused = await _open(second, server, 2)
        assert (len(held), refused) == (1, 1)
        assert (await _open(elsewhere, server, 3))[1] == 0
        assert (await _open(own, server, 5))[1] == 0
    assert server.limit_hits.snapshot() == {"host.streams_per_source": 1}


async def test_streams_per_protocol_leave_room_for_others(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    config = HostConfig(max_inbound_streams_per_protocol=2)
    server, holder = await _server(quic_hosts, config)
    a = await _client(quic_hosts, "127.0.0.5", server)
    b = await _client(quic_hosts, "127.0.0.6", server)
    async with asyncio.timeout(20):
        assert (await _open(a, server, 2))[1] == 0
        await holder.wait_for(lambda: holder.open == 2)
        # Refused after negotiation: reset once the protocol is known (the
        # confirmation may or may not reach the client first).
        with pytest.raises(OverlayError):
            late = await b.new_stream(server.peer_id, [HOLD])
            await late.read()
        assert (await _open(b, server, 2, OTHER))[1] == 0
    assert server.limit_hits.snapshot() == {"host.streams_per_protocol": 1}


async def test_stats_report_the_hosts_refusals(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from overlay.daemon.ops_stats import collect_stats, metrics_text

    server, holder = await _server(quic_hosts, HostConfig(max_inbound_streams_per_peer=1))
    client = await _client(quic_hosts, "127.0.0.7", server)
    async with asyncio.timeout(20):
        held, refused = await _open(client, server, 3)
        assert (len(held), refused) == (1, 2)
    daemon = SimpleNamespace(api=SimpleNamespace(limit_hits=LimitHits(), client_count=0),
                             host=server, extensions=[])
    stats = collect_stats(daemon)
    assert stats["limits"] == {"host.streams_per_peer": 2}
    assert stats["host"]["inbound_streams"] == 1 and stats["host"]["connections"] == 1
    assert 'overlay_limit_hits_total{cause="host.streams_per_peer"} 2.0' in metrics_text(
        daemon).decode()


async def test_a_connection_that_keeps_being_refused_is_closed(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    from overlay.negotiate import encode_message

    config = HostConfig(max_inbound_streams_per_peer=2, refused_streams_burst=4,
                        refused_streams_rate=0.001)
    server, holder = await _server(quic_hosts, config)
    client = await _client(quic_hosts, "127.0.0.8", server)
    conn = client.best_connection(server.peer_id)
    assert conn is not None
    async with asyncio.timeout(20):
        # Streams that never name a protocol: two held, four refused (the
        # burst), the seventh refusal closes the connection.
        for _ in range(7):
            stream = await conn.open_stream()
            stream.write(encode_message("/multistream/1.0.0"))
        await conn.wait_closed()
    assert server.limit_hits.snapshot() == {"host.streams_per_peer": 5, "host.refused_streams": 1}
    assert server.connections() == []
