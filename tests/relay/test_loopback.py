"""Circuit relay v2 between real hosts over QUIC on loopback: A reserves on
R, B reaches A through R with ``open_circuit``; limits cut or pass; every
refusal is typed; hostile bytes cost one stream."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from overlay.errors import StreamClosed, StreamReset
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.relay.circuit import Circuit
from overlay.relay.client import open_circuit
from overlay.relay.errors import InvalidVoucher, NoReservation, PermissionDenied
from overlay.relay.messages import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    HopType,
    Peer,
    Status,
    StopMessage,
    StopType,
    decode_hop,
    decode_stop,
    encode_stop,
)
from overlay.relay.server_core import RelayLimits
from overlay.relay.voucher import open_voucher
from overlay.wire import encode_uvarint, frame, read_frame

from tests.relay.conftest import Node, RelayNet


def accept_into(node: Node) -> "asyncio.Queue[Circuit]":
    queue: asyncio.Queue[Circuit] = asyncio.Queue()
    node.client.on_circuit = queue.put_nowait
    return queue


async def read_all(stream: object) -> bytes:
    out = bytearray()
    while True:
        chunk = await stream.read(65536)  # type: ignore[attr-defined]
        if not chunk:
            return bytes(out)
        out += chunk


async def send_all(stream: object, data: bytes) -> None:
    for i in range(0, len(data), 32768):
        stream.write(data[i:i + 32768])  # type: ignore[attr-defined]
        await stream.drain()  # type: ignore[attr-defined]
    stream.write_eof()  # type: ignore[attr-defined]


async def test_reserve_then_connect_bytes_both_ways(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    info = await a.client.reserve(net.relay.peer_id)
    assert info.voucher is not None
    assert info.voucher.relay == net.relay.peer_id and info.voucher.peer == a.host.peer_id
    assert info.limit is not None and info.limit.data == 128 * 1024
    assert info.addrs and all(str(x).endswith(f"/p2p/{net.relay.peer_id}") for x in info.addrs)
    assert [str(x) for x in a.client.circuit_addrs(with_self=True)] == [
        f"{x}/p2p-circuit/p2p/{a.host.peer_id}" for x in info.addrs]
    assert net.server.stats().reservations_held == 1

    inbound = accept_into(a)
    out = await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)
    assert out.initiator and out.remote == a.host.peer_id and out.relay == net.relay.peer_id
    async with asyncio.timeout(10):
        got = await inbound.get()
    assert not got.initiator and got.remote == b.host.peer_id
    assert got.limit is not None and got.limit.duration == 120.0

    out.stream.write(b"hello from B")
    out.stream.write_eof()
    async with asyncio.timeout(10):
        assert await read_all(got.stream) == b"hello from B"
    got.stream.write(b"hello from A")
    got.stream.write_eof()
    async with asyncio.timeout(10):
        assert await read_all(out.stream) == b"hello from A"
        while net.server.stats().circuits_active:
            net.server.circuit_done.clear()
            await net.server.circuit_done.wait()
    stats = net.server.stats()
    assert stats.circuits_total == 1 and stats.bytes_relayed == 24
    assert stats.circuits_cut_by_limit == 0


async def test_bytes_relayed_includes_a_live_circuit(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    inbound = accept_into(a)
    out = await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)
    async with asyncio.timeout(10):
        got = await inbound.get()
    out.stream.write(b"x" * 5000)
    async with asyncio.timeout(10):
        assert await got.stream.readexactly(5000) == b"x" * 5000
    # Still open: what arrived has crossed the relay and is counted.
    stats = net.server.stats()
    assert stats.circuits_active == 1 and stats.bytes_relayed == 5000
    got.stream.write(b"y" * 300)
    async with asyncio.timeout(10):
        assert await out.stream.readexactly(300) == b"y" * 300
    assert net.server.stats().bytes_relayed == 5300
    out.stream.write_eof()
    got.stream.write_eof()
    async with asyncio.timeout(10):
        while net.server.stats().circuits_active:
            net.server.circuit_done.clear()
            await net.server.circuit_done.wait()
    assert net.server.stats().bytes_relayed == 5300


async def test_default_limit_cuts_a_large_transfer(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    inbound = accept_into(a)
    out = await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)
    async with asyncio.timeout(10):
        got = await inbound.get()

    async def sender() -> None:
        try:
            await send_all(out.stream, b"x" * (1 << 20))
        except (StreamReset, StreamClosed):
            pass

    async def receiver() -> int:
        received = 0
        try:
            while chunk := await got.stream.read(65536):
                received += len(chunk)
        except StreamReset:
            pass
        return received

    async with asyncio.timeout(20):
        _, received = await asyncio.gather(sender(), receiver())
    assert received <= 128 * 1024
    async with asyncio.timeout(10):
        while net.server.stats().circuits_active:
            net.server.circuit_done.clear()
            await net.server.circuit_done.wait()
    assert net.server.stats().circuits_cut_by_limit == 1


@pytest.mark.parametrize("limits", [RelayLimits(circuit_data=16 << 20)])
async def test_raised_limit_passes_10_mb_exactly(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    info = await a.client.reserve(net.relay.peer_id)
    assert info.limit is not None and info.limit.data == 16 << 20
    inbound = accept_into(a)
    out = await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)
    async with asyncio.timeout(10):
        got = await inbound.get()
    payload = hashlib.shake_256(b"relay").digest(10 * 1000 * 1000)
    async with asyncio.timeout(60):
        _, received = await asyncio.gather(send_all(out.stream, payload), read_all(got.stream))
    assert received == payload
    got.stream.write_eof()
    async with asyncio.timeout(10):
        assert await read_all(out.stream) == b""


@pytest.mark.parametrize("limits", [RelayLimits(allowlist=frozenset())])
async def test_connect_to_a_peer_without_reservation(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    with pytest.raises(NoReservation):
        await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)
    assert net.server.stats().refusals == {"no_reservation": 1}


async def test_stop_from_a_relay_without_our_reservation_is_refused(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    inbound = accept_into(a)
    # B plays a relay A never reserved on, claiming some third peer calls.
    await b.host.connect(f"{a.host.listen_addrs()[0]}/p2p/{a.host.peer_id}")
    stream = await b.host.new_stream(a.host.peer_id, [STOP_PROTOCOL])
    stranger = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    stream.write(frame(encode_stop(StopMessage(StopType.CONNECT, Peer(stranger)))))
    async with asyncio.timeout(10):
        answer = decode_stop(await read_frame(stream, 4096) or b"")
    assert answer.type is StopType.STATUS and answer.status == Status.PERMISSION_DENIED
    assert inbound.empty() and a.client.stop_refused == 1


async def test_malformed_hop_costs_only_that_stream(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    stream = await b.host.new_stream(net.relay.peer_id, [HOP_PROTOCOL])
    stream.write(frame(b"\xff\xff\xff"))
    async with asyncio.timeout(10):
        answer = decode_hop(await read_frame(stream, 4096) or b"")
    assert answer.type is HopType.STATUS and answer.status == Status.MALFORMED_MESSAGE
    # An oversized length prefix: refused before any body is read.
    stream = await b.host.new_stream(net.relay.peer_id, [HOP_PROTOCOL])
    stream.write(encode_uvarint(1 << 20))
    async with asyncio.timeout(10):
        answer = decode_hop(await read_frame(stream, 4096) or b"")
    assert answer.status == Status.MALFORMED_MESSAGE
    assert net.server.stats().refusals == {"malformed": 2}
    # The connection and the relay still work.
    inbound = accept_into(a)
    await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)
    async with asyncio.timeout(10):
        await inbound.get()
    assert await b.host.ping(net.relay.peer_id) > 0


async def test_voucher_from_the_wire_verifies_and_forgery_fails(net: RelayNet) -> None:
    a = await net.make_node()
    info = await a.client.reserve(net.relay.peer_id)
    assert info.voucher is not None
    # Re-reserving renews (same slot) with a later or equal expiry.
    again = await a.client.reserve(net.relay.peer_id)
    assert again.expire >= info.expire
    stats = net.server.stats()
    assert stats.reservations_held == 1 and stats.reservations_renewed == 1
    with pytest.raises(InvalidVoucher):
        open_voucher(b"\x00garbage", relay=net.relay.peer_id, peer=a.host.peer_id)


async def test_permission_denied_is_typed(net: RelayNet) -> None:
    a = await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    with pytest.raises(PermissionDenied):
        await open_circuit(a.host, net.relay.peer_id, a.host.peer_id)


async def test_reservation_ends_with_the_connection(net: RelayNet) -> None:
    from overlay.host.events import HostListener

    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    gone = asyncio.Event()
    net.relay.add_listener(HostListener(disconnected=lambda peer: gone.set()))
    a.host.disconnect(net.relay.peer_id)
    async with asyncio.timeout(10):
        await gone.wait()
    assert net.server.stats().reservations_held == 0
    with pytest.raises(NoReservation):
        await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)


async def test_malformed_stop_from_our_relay_costs_only_that_stream(net: RelayNet) -> None:
    a = await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    inbound = accept_into(a)
    stream = await net.relay.new_stream(a.host.peer_id, [STOP_PROTOCOL])
    stream.write(frame(b"\x08\x09"))  # type 9: no such stop message
    async with asyncio.timeout(10):
        answer = decode_stop(await read_frame(stream, 4096) or b"")
    assert answer.status == Status.MALFORMED_MESSAGE
    stream = await net.relay.new_stream(a.host.peer_id, [STOP_PROTOCOL])
    stream.write(encode_uvarint(1 << 16))  # a length over the limit
    async with asyncio.timeout(10):
        answer = decode_stop(await read_frame(stream, 4096) or b"")
    assert answer.status == Status.MALFORMED_MESSAGE
    assert inbound.empty() and a.client.stop_refused == 2
    assert await net.relay.ping(a.host.peer_id) > 0


async def test_voucher_for_another_peer_is_refused(
        net: RelayNet, monkeypatch: pytest.MonkeyPatch) -> None:
    import overlay.relay.server as server_module
    from overlay.relay.voucher import Voucher, seal_voucher

    a = await net.make_node()
    other = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())

    def for_someone_else(key: object, voucher: Voucher) -> bytes:
        forged = Voucher(voucher.relay, other, voucher.expiration)
        return seal_voucher(key, forged)  # type: ignore[arg-type]

    monkeypatch.setattr(server_module, "seal_voucher", for_someone_else)
    with pytest.raises(InvalidVoucher, match="for peer"):
        await a.client.reserve(net.relay.peer_id)
    assert a.client.reservations() == []


@pytest.mark.parametrize("limits", [RelayLimits(circuit_duration=0.3)])
async def test_duration_limit_cuts_an_idle_circuit(net: RelayNet) -> None:
    a, b = await net.make_node(), await net.make_node()
    await a.client.reserve(net.relay.peer_id)
    inbound = accept_into(a)
    out = await open_circuit(b.host, net.relay.peer_id, a.host.peer_id)
    async with asyncio.timeout(10):
        got = await inbound.get()
        # Nobody sends; the relay's timer ends the circuit on both sides.
        with pytest.raises(StreamReset):
            await got.stream.read(100)
        with pytest.raises(StreamReset):
            await out.stream.read(100)
        while net.server.stats().circuits_active:
            net.server.circuit_done.clear()
            await net.server.circuit_done.wait()
    assert net.server.stats().circuits_cut_by_limit == 1


async def test_relay_without_addresses_falls_back_to_the_dialed_one(net: RelayNet) -> None:
    a = await net.make_node()
    net.server._addrs = lambda: []
    info = await a.client.reserve(net.relay.peer_id)
    assert [str(x) for x in info.addrs] == [net.relay_addr()]


async def test_reserve_naming_another_peer_reserves_for_the_sender(net: RelayNet) -> None:
    from overlay.relay.messages import HopMessage, encode_hop

    b = await net.make_node()
    other = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    stream = await b.host.new_stream(net.relay.peer_id, [HOP_PROTOCOL])
    stream.write(frame(encode_hop(HopMessage(HopType.RESERVE, Peer(other)))))
    async with asyncio.timeout(10):
        answer = decode_hop(await read_frame(stream, 4096) or b"")
    assert answer.status == Status.OK and answer.reservation is not None
    voucher = open_voucher(answer.reservation.voucher, relay=net.relay.peer_id,
                           peer=b.host.peer_id)
    assert voucher.peer == b.host.peer_id
    assert [p for p, _ in net.server.reservations()] == [b.host.peer_id]
