"""The UDP endpoint: demultiplexing, the datagram hook, hostile input, caps."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
from collections.abc import Callable

import pytest

from overlay.errors import ConnectionClosed, DialError
from overlay.identity import Ed25519PrivateKey
from overlay.transport import BindError, EndpointClosed, QuicEndpoint, TransportConfig, is_stun

from .conftest import HOSTS, Pair, peer_of

STUN_BINDING = (
    b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + os.urandom(12)
)


def _long_initial(rng: random.Random) -> bytes:
    """Random bytes shaped like a QUIC v1 Initial with an unknown DCID."""
    body = bytes(rng.getrandbits(8) for _ in range(1250))
    return (bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + body[:8] + b"\x08" + body[8:16]
            + b"\x00" + b"\x44\xd0" + body[16:])


async def _udp_socket(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    sock.setblocking(False)
    return sock


def test_is_stun() -> None:
    assert is_stun(STUN_BINDING)
    assert not is_stun(b"\x40" + STUN_BINDING[1:])  # QUIC fixed bit set
    assert not is_stun(STUN_BINDING[:19])
    assert not is_stun(b"\x00\x01\x00\x00\x00\x00\x00\x00" + bytes(12))


async def test_datagram_hook_receives_stun_and_non_quic(pair: Pair) -> None:
    async with asyncio.timeout(5):
        got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

        def hook(data: bytes, addr: tuple[str, int]) -> bool:
            got.put_nowait((data, addr))
            return True

        pair.b.set_datagram_hook(hook)
        pair.a.sendto(STUN_BINDING, pair.b.local_address)
        assert await got.get() == (STUN_BINDING, pair.a.local_address)
        junk = b"\x00hole-punch"  # fixed bit clear: not QUIC
        pair.a.sendto(junk, pair.b.local_address)
        assert await got.get() == (junk, pair.a.local_address)
        # QUIC traffic on the same socket is unaffected.
        stream = await pair.conn_a.open_stream()
        stream.write(b"ping")
        await stream.close()
        inbound = await pair.conn_b.accept_stream()
        assert await inbound.read() == b"ping"
        assert got.empty()


async def test_garbage_datagrams_do_not_hurt(pair: Pair) -> None:
    async with asyncio.timeout(5):
        rng = random.Random(1234)
        sock = await _udp_socket()
        loop = asyncio.get_running_loop()
        try:
            target = pair.b.local_address
            payloads = [b"", b"\x40", b"\xff" * 3, b"\xc0\x00\x00\x00\x01\xff"]
            payloads += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 1400)))
                         for _ in range(200)]
            payloads += [_long_initial(rng) for _ in range(20)]
            # Undecryptable packets aimed at the live connection's CIDs.
            cid = pair.conn_b._quic.host_cid
            payloads += [bytes([0x40 | rng.getrandbits(6)]) + cid + os.urandom(60)
                         for _ in range(50)]
            payloads += [bytes([0xE0]) + (1).to_bytes(4, "big") + b"\x08" + cid + b"\x00"
                         + b"\x40\x40" + os.urandom(64) for _ in range(20)]
            for payload in payloads:
                await loop.sock_sendto(sock, payload, target)
            # Round trip on the established connection after the barrage:
            # datagrams are processed in order, so all junk was handled.
            stream = await pair.conn_a.open_stream()
            stream.write(b"still alive")
            await stream.close()
            inbound = await pair.conn_b.accept_stream()
            assert await inbound.readexactly(11) == b"still alive"
            inbound.write(b"ok")
            await inbound.close()
            assert await stream.readexactly(2) == b"ok"
            # Junk Initials created no lingering connections.
            assert pair.b.connections == [pair.conn_b]
            # And new peers are still served.
            key = Ed25519PrivateKey.generate()
            async with await QuicEndpoint.create("127.0.0.1", 0, key) as c:
                conn = await c.dial(target, peer_of(pair.key_b))
                assert (await pair.b.accept()).remote_peer == peer_of(key)
                assert conn.remote_peer == peer_of(pair.key_b)
        finally:
            sock.close()


async def test_simultaneous_dial_on_single_sockets() -> None:
    async with asyncio.timeout(5):
        key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_a) as a, \
                await QuicEndpoint.create("127.0.0.1", 0, key_b) as b:
            out_a, out_b = await asyncio.gather(
                a.dial(b.local_address, peer_of(key_b)), b.dial(a.local_address, peer_of(key_a))
            )
            in_a, in_b = await a.accept(), await b.accept()
            assert out_a.remote_peer == peer_of(key_b) and out_b.remote_peer == peer_of(key_a)
            assert in_a.remote_peer == peer_of(key_b) and in_b.remote_peer == peer_of(key_a)
            # All four connections share the two sockets and carry data.
            for dialer, listener in ((out_a, in_b), (out_b, in_a)):
                stream = await dialer.open_stream()
                stream.write(b"x")
                await stream.close()
                assert await (await listener.accept_stream()).read() == b"x"
            assert len(a.connections) == len(b.connections) == 2


async def test_dial_family_mismatch_and_bad_address() -> None:
    async with asyncio.timeout(5):
        async with await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as a:
            with pytest.raises(DialError, match="IPv6"):
                await a.dial(("::1", 4001))
            with pytest.raises(DialError, match="not an IP"):
                await a.dial(("example.invalid", 4001))
            with pytest.raises(DialError, match="port"):
                await a.dial(("127.0.0.1", 0))


async def test_bind_errors() -> None:
    async with asyncio.timeout(5):
        key = Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key) as a:
            with pytest.raises(BindError, match="port"):
                await QuicEndpoint.create("127.0.0.1", a.local_address[1], key)
        with pytest.raises(BindError, match="not an IP"):
            await QuicEndpoint.create("localhost", 0, key)
        with pytest.raises(BindError, match="invalid UDP port"):
            await QuicEndpoint.create("127.0.0.1", 70000, key)


@pytest.mark.parametrize("host", HOSTS)
async def test_v4_and_v6_share_a_port(host: str) -> None:
    """One port number, one endpoint per family: a datagram sent to each
    family's loopback reaches that family's endpoint and no other."""
    async with asyncio.timeout(5):
        key = Ed25519PrivateKey.generate()
        other = "0.0.0.0" if ":" in host else "::"
        other_loopback = "127.0.0.1" if ":" in host else "::1"
        try:
            first = await QuicEndpoint.create(host, 0, key)
        except BindError:
            pytest.skip("address family unavailable")
        port = first.local_address[1]
        try:
            second = await QuicEndpoint.create(other, port, key)
        except BindError as exc:
            await first.aclose()
            if "Address already in use" in str(exc):
                raise
            pytest.skip("other address family unavailable")
        got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        def hook_for(name: str) -> Callable[[bytes, tuple[str, int]], bool]:
            def hook(data: bytes, addr: tuple[str, int]) -> bool:
                got.put_nowait((name, data))
                return True
            return hook

        first.set_datagram_hook(hook_for("first"))
        second.set_datagram_hook(hook_for("second"))
        try:
            for target, family, payload in (
                    (host, socket.AF_INET6 if ":" in host else socket.AF_INET, b"\x00to-first"),
                    (other_loopback, socket.AF_INET6 if ":" in other_loopback else socket.AF_INET,
                     b"\x00to-second")):
                with socket.socket(family, socket.SOCK_DGRAM) as sender:
                    sender.sendto(payload, (target, port))
            received = {await got.get(), await got.get()}
            assert received == {("first", b"\x00to-first"), ("second", b"\x00to-second")}
            assert got.empty()
        finally:
            await second.aclose()
            await first.aclose()


async def test_aclose_closes_connections_and_fails_waiters(pair: Pair) -> None:
    async with asyncio.timeout(5):
        accepting = asyncio.ensure_future(pair.b.accept())
        stream = await pair.conn_a.open_stream()
        stream.write(b"x")
        inbound = await pair.conn_b.accept_stream()
        assert await inbound.read() == b"x"
        waiter = asyncio.ensure_future(pair.conn_b.accept_stream())
        inbound_reader = asyncio.ensure_future(inbound.read())
        reader = asyncio.ensure_future(stream.read())
        await pair.b.aclose()
        with pytest.raises(EndpointClosed):
            await accepting
        with pytest.raises(EndpointClosed):
            await waiter
        with pytest.raises(EndpointClosed):
            await inbound_reader
        # The peer learns through CONNECTION_CLOSE, not an idle timeout.
        await pair.conn_a.wait_closed()
        with pytest.raises(ConnectionClosed, match="endpoint closing"):
            await reader
        with pytest.raises(EndpointClosed):
            await pair.b.dial(pair.a.local_address)
        with pytest.raises(EndpointClosed):
            pair.b.sendto(b"x", pair.a.local_address)


async def test_max_connections_cap() -> None:
    async with asyncio.timeout(5):
        config = TransportConfig(max_connections=1)
        key_b = Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as a1, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(),
                                          TransportConfig(handshake_timeout=0.3)) as a2:
            await a1.dial(b.local_address)
            await b.accept()
            # The listener drops the second client's Initials: it times out.
            with pytest.raises(DialError, match="no QUIC response"):
                await a2.dial(b.local_address)
            assert len(b.connections) == 1
            # The cap also bounds dials.
            with pytest.raises(DialError, match="limit"):
                await b.dial(a1.local_address)


async def test_max_handshakes_cap() -> None:
    async with asyncio.timeout(5):
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection

        config = TransportConfig(max_handshakes=1, handshake_timeout=0.5)
        key_b = Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(),
                                          TransportConfig(handshake_timeout=0.2)) as a:
            # A client that sends its Initial and then falls silent.
            stalled = QuicConnection(configuration=QuicConfiguration(alpn_protocols=["libp2p"]))
            stalled.connect(b.local_address, now=0.0)
            sock = await _udp_socket()
            try:
                loop = asyncio.get_running_loop()
                for data, _ in stalled.datagrams_to_send(now=0.0):
                    await loop.sock_sendto(sock, data, b.local_address)
                with pytest.raises(DialError, match="no QUIC response"):
                    await a.dial(b.local_address)
                # The stalled handshake expires, freeing the slot.
                closed = [c for c in b.connections if not c.is_initiator]
                assert len(closed) == 1
                await closed[0].wait_closed()
                conn = await a.dial(b.local_address)
                assert conn.remote_peer == peer_of(key_b)
            finally:
                sock.close()


async def test_internal_error_costs_one_connection_only(pair: Pair) -> None:
    async with asyncio.timeout(5):
        def explode(*args: object) -> None:
            raise RuntimeError("simulated aioquic bug")

        pair.conn_b._quic.receive_datagram = explode  # type: ignore[method-assign]
        pair.b.set_datagram_hook(lambda data, addr: 1 / 0 > 0)
        pair.a.sendto(b"\x00junk", pair.b.local_address)  # the hook raises
        stream = await pair.conn_a.open_stream()
        stream.write(b"boom")
        await pair.conn_b.wait_closed()
        assert "simulated aioquic bug" in str(pair.conn_b.close_reason)
        assert pair.b.connections == []
        await _serves(pair)


async def _serves(pair: Pair) -> None:
    key = Ed25519PrivateKey.generate()
    async with await QuicEndpoint.create("127.0.0.1", 0, key) as c:
        conn = await c.dial(pair.b.local_address, peer_of(pair.key_b))
        inbound = await pair.b.accept()
        assert inbound.remote_peer == peer_of(key)
        stream = await conn.open_stream()
        stream.write(b"ok")
        await stream.close()
        assert await (await inbound.accept_stream()).read() == b"ok"


async def test_aclose_fails_pending_dial_with_endpoint_closed() -> None:
    async with asyncio.timeout(5):
        a = await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate())
        sock = await _udp_socket()  # a peer that never answers
        try:
            dial = asyncio.ensure_future(a.dial(sock.getsockname()))
            # The silent peer got the Initial: the dial is under way.
            await asyncio.get_running_loop().sock_recvfrom(sock, 2048)
            assert len(a.connections) == 1
            await a.aclose()
            with pytest.raises(EndpointClosed):
                await dial
        finally:
            sock.close()


async def test_version_negotiation_only_for_full_size_datagrams(pair: Pair) -> None:
    async with asyncio.timeout(5):
        sock = await _udp_socket()
        loop = asyncio.get_running_loop()
        try:
            def header(scid: bytes) -> bytes:
                return b"\xc0" + b"\x1a\x2a\x3a\x4a" + b"\x08" + os.urandom(8) + b"\x08" + scid

            short_scid, long_scid = b"S" * 8, b"L" * 8
            await loop.sock_sendto(sock, header(short_scid) + bytes(100), pair.b.local_address)
            await loop.sock_sendto(sock, header(long_scid) + bytes(1200), pair.b.local_address)
            reply, _ = await loop.sock_recvfrom(sock, 2048)
            # Only the full-size datagram was answered: a Version Negotiation
            # packet (version 0) listing QUIC v1, addressed to its SCID.
            assert reply[1:5] == b"\x00\x00\x00\x00"
            assert reply[6:14] == long_scid
            assert b"\x00\x00\x00\x01" in reply[5:]
        finally:
            sock.close()


async def test_larger_datagrams_are_configurable() -> None:
    async with asyncio.timeout(5):
        from .conftest import make_pair

        config = TransportConfig(max_datagram_size=1452, loopback_datagram_size=1452)
        p = await make_pair(config_a=config, config_b=config)
        sizes: list[int] = []
        send = p.a._send_datagram

        def record(data: bytes, addr: object) -> None:
            sizes.append(len(data))
            send(data, addr)  # type: ignore[arg-type]

        p.a._send_datagram = record  # type: ignore[method-assign]
        batch = p.a._send_batch

        def record_batch(datagrams: list[bytes], addr: object) -> bool:
            sent = batch(datagrams, addr)  # type: ignore[arg-type]
            if sent:
                sizes.extend(len(d) for d in datagrams)
            return sent

        p.a._send_batch = record_batch  # type: ignore[method-assign]
        try:
            stream = await p.conn_a.open_stream()
            stream.write(os.urandom(200_000))
            await stream.close()
            inbound = await p.conn_b.accept_stream()
            total = 0
            while chunk := await inbound.read():
                total += len(chunk)
            assert total == 200_000
            assert max(sizes) == 1452
        finally:
            await p.a.aclose()
            await p.b.aclose()


async def _sent_sizes(host: str, config: TransportConfig | None) -> tuple[list[int], list[int]]:
    """Sizes of the datagrams the dialer sends during the handshake and
    while it sends 200 kB on one stream."""
    from .conftest import make_pair

    handshake: list[int] = []
    sizes = handshake
    original = QuicEndpoint._send_datagram

    def record(self: QuicEndpoint, data: bytes, addr: object) -> object:
        sizes.append(len(data))
        return original(self, data, addr)  # type: ignore[arg-type]

    QuicEndpoint._send_datagram = record  # type: ignore[method-assign, assignment]
    try:
        p = await make_pair(host, config_a=config, config_b=config)
    finally:
        QuicEndpoint._send_datagram = original  # type: ignore[method-assign]
    bulk: list[int] = []
    sizes = bulk
    p.a._send_datagram = lambda data, addr: record(p.a, data, addr)  # type: ignore[assignment, method-assign, return-value]
    batch = p.a._send_batch

    def record_batch(datagrams: list[bytes], addr: object) -> bool:
        sent = batch(datagrams, addr)  # type: ignore[arg-type]
        if sent:
            sizes.extend(len(d) for d in datagrams)
        return sent

    p.a._send_batch = record_batch  # type: ignore[method-assign]
    try:
        stream = await p.conn_a.open_stream()
        stream.write(os.urandom(200_000))
        await stream.close()
        inbound = await p.conn_b.accept_stream()
        total = 0
        while chunk := await inbound.read():
            total += len(chunk)
        assert total == 200_000
    finally:
        await p.a.aclose()
        await p.b.aclose()
    return handshake, bulk


@pytest.mark.parametrize("host", HOSTS)
async def test_loopback_peers_use_large_datagrams_after_the_handshake(host: str) -> None:
    async with asyncio.timeout(5):
        handshake, bulk = await _sent_sizes(host, None)
        # Handshake datagrams (Initials are padded) keep the safe size.
        assert max(handshake) == 1200
        assert max(bulk) == TransportConfig().loopback_datagram_size


async def test_loopback_datagram_size_can_be_turned_off() -> None:
    async with asyncio.timeout(5):
        config = TransportConfig(loopback_datagram_size=1200)
        handshake, bulk = await _sent_sizes("127.0.0.1", config)
        assert max(handshake + bulk) == 1200


def test_peer_max_udp_payload_size_is_kept() -> None:
    """The peer's own receive limit caps the datagram size we pick."""
    from aioquic.buffer import Buffer
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.packet import QuicTransportParameters, push_quic_transport_parameters

    from overlay.transport.aioquic_compat import Libp2pQuicConnection

    conn = Libp2pQuicConnection(configuration=QuicConfiguration(is_client=True),
                                certificate_check=lambda chain: None, max_inbound_streams=8)
    assert conn.peer_max_udp_payload == 65527
    buf = Buffer(capacity=256)
    push_quic_transport_parameters(buf, QuicTransportParameters(
        max_udp_payload_size=1500,
        original_destination_connection_id=conn._original_destination_connection_id))
    conn._parse_transport_parameters(buf.data)
    assert conn.peer_max_udp_payload == 1500
    conn.set_max_datagram_size(1500)
    assert conn.max_datagram_size == 1500


async def test_dial_without_a_route_fails_at_once() -> None:
    """A send the kernel refuses (no route) fails the dial immediately with
    the reason, instead of after the handshake timeout."""
    import errno

    config = TransportConfig(handshake_timeout=30.0)
    async with await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(), config) as ep:
        transport = ep._transport
        assert transport is not None
        protocol = transport.get_protocol()

        def unroutable(data: bytes, addr: object = None) -> None:
            # What asyncio's datagram transport does when sendto() fails.
            protocol.error_received(OSError(errno.ENETUNREACH, "Network is unreachable"))

        transport.sendto = unroutable  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(5):
            with pytest.raises(DialError, match="cannot reach 127.0.0.1 port 9: Network is unreachable"):
                await ep.dial(("127.0.0.1", 9))
        assert loop.time() - started < 5
        assert not ep.connections


class _NoGsoSocket:
    """A socket whose kernel refuses UDP GSO, as some devices do (EIO)."""

    def __init__(self) -> None:
        self.calls = 0

    def sendmsg(self, *args: object) -> int:
        self.calls += 1
        raise OSError(errno.EIO, "no GSO here")


@pytest.mark.parametrize("gso", ["kernel", "refused"])
async def test_bulk_data_goes_out_in_batches_or_one_by_one(gso: str) -> None:
    """After the handshake, runs of full-size datagrams leave in one GSO
    send; an endpoint whose kernel refuses GSO stops trying and sends them
    one by one, and the data arrives intact either way."""
    async with asyncio.timeout(5):
        from .conftest import make_pair

        config = TransportConfig(loopback_datagram_size=1452)
        p = await make_pair(config_a=config, config_b=config)
        batches: list[int] = []
        batch = p.a._send_batch

        def record_batch(datagrams: list[bytes], addr: object) -> bool:
            sent = batch(datagrams, addr)  # type: ignore[arg-type]
            if sent:
                batches.append(len(datagrams))
            return sent

        p.a._send_batch = record_batch  # type: ignore[method-assign]
        fake, real = _NoGsoSocket(), p.a._sock
        if gso == "refused":
            p.a._sock = fake  # type: ignore[assignment]
        try:
            payload = os.urandom(500_000)
            stream = await p.conn_a.open_stream()
            stream.write(payload)
            await stream.close()
            inbound = await p.conn_b.accept_stream()
            received = bytearray()
            while chunk := await inbound.read():
                received += chunk
            assert received == payload
            if gso == "kernel":
                assert batches and max(batches) > 1
                assert p.a._gso
            else:
                assert batches == [] and fake.calls == 1
                assert not p.a._gso
        finally:
            p.a._sock = real
            await p.a.aclose()
            await p.b.aclose()
