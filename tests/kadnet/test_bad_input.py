"""Hostile kad traffic over real QUIC streams (issue 3, "Bad input").

Each bad message is refused with a typed error, only the offending stream
is reset, nothing of it reaches the routing table or the stores, and the
node goes on serving.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from overlay.errors import MessageTooLarge, OverlayError, StreamReset
from overlay.host import Host, NegotiatedStream
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.errors import (
    InvalidKadMessage,
    InvalidPeerInfo,
    InvalidProviderKey,
    InvalidRecord,
    TooManyPeers,
    UnknownNamespace,
    UnsupportedMessageType,
)
from overlay.kad.keyspace import Contact, fake_peer_id
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.records import immutable_key
from overlay.kad.service_config import DEFAULT_KAD_PROTOCOL
from overlay.wire.pb import kad_pb2
from overlay.wire.varint import encode_uvarint, frame, read_frame

from tests.kadnet.helpers import FAST_HOST, FAST_KAD, LOOPBACK, Node, full_addr, kad_nodes

PROTO = DEFAULT_KAD_PROTOCOL
TIMEOUT = 20.0


@asynccontextmanager
async def raw_host(handler: Callable[[NegotiatedStream], Awaitable[None]] | None = None) -> AsyncIterator[Host]:
    """A bare host; with ``handler`` it claims to serve kad (so identify
    advertises it) and answers with whatever ``handler`` writes."""
    async with Host(Ed25519PrivateKey.generate(), FAST_HOST) as host:
        await host.listen([LOOPBACK])
        if handler is not None:
            host.set_stream_handler(PROTO, handler)
        yield host


def _pb(**fields: object) -> kad_pb2.Message:
    message = kad_pb2.Message()
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def _peer_entries(message: kad_pb2.Message, count: int, addrs: list[bytes]) -> None:
    rng = random.Random(count)
    for _ in range(count):
        entry = message.closerPeers.add()
        entry.id = fake_peer_id(rng).multihash
        entry.addrs.extend(addrs)


def _bad_request(kind: str) -> bytes:
    """Framed bytes of one hostile request."""
    if kind == "garbage":
        return frame(b"\xff\xff\xff\xff not a protobuf")
    if kind == "oversized":
        return encode_uvarint(16 * 1024 + 1) + b"\x00" * 100
    if kind == "unknown-type":
        return frame(_pb(type=7, key=b"x").SerializeToString())
    if kind == "ping":
        return frame(_pb(type=5).SerializeToString())
    if kind == "forged-record":
        message = _pb(type=0, key=immutable_key(b"real"))
        message.record.key = immutable_key(b"real")
        message.record.value = b"forged"
        return frame(message.SerializeToString())
    if kind == "unknown-namespace":
        message = _pb(type=0, key=b"/nope/abc")
        message.record.key = b"/nope/abc"
        message.record.value = b"v"
        return frame(message.SerializeToString())
    if kind == "long-provider-key":
        message = _pb(type=2, key=b"\x12" * 81)
        return frame(message.SerializeToString())
    if kind == "many-peers":
        message = _pb(type=4, key=b"\x00\x02ab")
        _peer_entries(message, 41, [])
        return frame(message.SerializeToString())
    if kind == "garbage-multiaddr":
        message = _pb(type=4, key=b"\x00\x02ab")
        _peer_entries(message, 1, [b"\x04\x7f\x00"])  # ip4 cut short
        return frame(message.SerializeToString())
    raise AssertionError(kind)


EXPECTED: dict[str, type[OverlayError]] = {
    "garbage": InvalidKadMessage,
    "oversized": MessageTooLarge,
    "unknown-type": UnsupportedMessageType,
    "ping": UnsupportedMessageType,
    "forged-record": InvalidRecord,
    "unknown-namespace": UnknownNamespace,
    "long-provider-key": InvalidProviderKey,
    "many-peers": TooManyPeers,
    "garbage-multiaddr": InvalidPeerInfo,
}


async def _read_until_reset(stream: NegotiatedStream) -> None:
    with pytest.raises(StreamReset):
        for _ in range(10):
            if await read_frame(stream, 1 << 20) is None:
                break


@pytest.mark.parametrize("kind", sorted(EXPECTED))
async def test_hostile_request_resets_only_its_stream(kind: str) -> None:
    async with asyncio.timeout(TIMEOUT), kad_nodes(2) as (server, honest), raw_host() as attacker:
        await honest.kad.bootstrap([full_addr(server.host)])
        table_before = {c.peer_id for c in server.kad.table.contacts()}
        records_before = len(server.kad.records)
        await attacker.connect(full_addr(server.host))

        stream = await attacker.new_stream(server.host.peer_id, [PROTO])
        # A valid request first: several requests share one stream.
        stream.write(frame(_pb(type=4, key=server.host.peer_id.multihash).SerializeToString()))
        assert await read_frame(stream, 1 << 16) is not None
        stream.write(_bad_request(kind))
        await stream.drain()
        await _read_until_reset(stream)

        peer, error = server.kad.stats.inbound_errors[-1]
        assert peer == attacker.peer_id
        assert isinstance(error, EXPECTED[kind]), repr(error)
        assert {c.peer_id for c in server.kad.table.contacts()} == table_before
        assert attacker.peer_id not in server.kad.table
        assert len(server.kad.records) == records_before
        assert len(server.kad.providers) == 0

        # The node still serves: a fresh stream from the same peer works.
        answer = await honest.kad.request(
            Contact.of(server.host.peer_id), KadMessage(MessageType.FIND_NODE, b"\x00\x02ab")
        )
        assert answer.type is MessageType.FIND_NODE


async def test_requests_beyond_the_stream_limit_reset_it() -> None:
    config = replace(FAST_KAD, max_requests_per_stream=3)
    async with asyncio.timeout(TIMEOUT), kad_nodes(1, config) as (server,), raw_host() as attacker:
        await attacker.connect(full_addr(server.host))
        stream = await attacker.new_stream(server.host.peer_id, [PROTO])
        request = frame(_pb(type=4, key=b"\x00\x02ab").SerializeToString())
        for _ in range(3):
            stream.write(request)
            try:
                assert await read_frame(stream, 1 << 16) is not None
            except StreamReset:
                raise AssertionError(server.kad.stats.inbound_errors) from None
        stream.write(request)
        await _read_until_reset(stream)
        assert "too many requests" in str(server.kad.stats.inbound_errors[-1][1])


# --- hostile answers -----------------------------------------------------------


def _answer_with(payload: Callable[[kad_pb2.Message], bytes]) -> Callable[[NegotiatedStream], Awaitable[None]]:
    async def handler(stream: NegotiatedStream) -> None:
        data = await read_frame(stream, 1 << 16)
        if data is None:
            return
        request = kad_pb2.Message()
        request.ParseFromString(data)
        stream.write(payload(request))
        await stream.drain()
        await stream.close()

    return handler


def _closer(count: int, addrs: list[bytes], raw_frame: bool = False) -> Callable[[kad_pb2.Message], bytes]:
    def build(request: kad_pb2.Message) -> bytes:
        message = _pb(type=request.type, key=request.key)
        _peer_entries(message, count, addrs)
        data = message.SerializeToString()
        return encode_uvarint(len(data)) + data if raw_frame else frame(data)

    return build


def _wrong_type(request: kad_pb2.Message) -> bytes:
    return frame(_pb(type=3 if request.type != 3 else 4, key=request.key).SerializeToString())


def _forged_value(request: kad_pb2.Message) -> bytes:
    message = _pb(type=request.type, key=request.key)
    message.record.key = request.key
    message.record.value = b"forged value"
    return frame(message.SerializeToString())


HOSTILE_ANSWERS: dict[str, tuple[Callable[[kad_pb2.Message], bytes], type[OverlayError]]] = {
    "thousands-of-peers": (_closer(2000, [], raw_frame=True), MessageTooLarge),
    "41-peers": (_closer(41, []), TooManyPeers),
    "garbage-multiaddrs": (_closer(5, [b"\x04\x01\x02"]), InvalidPeerInfo),
    "wrong-type": (_wrong_type, InvalidKadMessage),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_ANSWERS))
async def test_hostile_answer_is_a_typed_error_and_never_enters_the_table(kind: str) -> None:
    build, expected = HOSTILE_ANSWERS[kind]
    async with (
        asyncio.timeout(TIMEOUT),
        kad_nodes(2) as (client, honest),
        raw_host(_answer_with(build)) as liar,
    ):
        await client.kad.bootstrap([full_addr(honest.host)])
        await client.host.connect(full_addr(liar))
        # Its identify advertises kad, but its junk answer to the admitting
        # request keeps it out of the table.
        await _checked(client, liar.peer_id)
        assert liar.peer_id not in client.kad.table

        with pytest.raises(expected):
            await client.kad.request(
                Contact.of(liar.peer_id), KadMessage(MessageType.FIND_NODE, b"\x00\x02ab")
            )
        # A lookup asks it, gets junk, and drops it; none of its peers get in.
        await client.kad.find_closest(fake_peer_id(random.Random(5)).multihash)
        members = {c.peer_id for c in client.kad.table.contacts()}
        assert members == {honest.host.peer_id}, members


async def test_forged_value_is_ignored_and_the_liar_corrected() -> None:
    seen: list[kad_pb2.Message] = []
    corrected = asyncio.Event()

    def forge_and_note(request: kad_pb2.Message) -> bytes:
        seen.append(request)
        if request.type == kad_pb2.Message.PUT_VALUE and request.record.value == b"the real value":
            corrected.set()
        return _forged_value(request)

    async with (
        asyncio.timeout(TIMEOUT),
        kad_nodes(2) as (client, honest),
        raw_host(_answer_with(forge_and_note)) as liar,
    ):
        await client.kad.bootstrap([full_addr(honest.host)])
        await client.host.connect(full_addr(liar))
        await _identified(client, liar.peer_id)
        key = await honest.kad.put_immutable(b"the real value")
        seen.clear()
        record = await client.kad.get_value(key)
        assert record.value == b"the real value"
        assert any(m.type == kad_pb2.Message.GET_VALUE for m in seen)
        # The forged answer marks the liar outdated: it is sent the real record.
        await corrected.wait()


async def _identified(node: Node, peer: PeerId) -> None:
    """Wait until ``node``'s table holds ``peer`` (identify listed kad, then
    it answered the one request that admits it)."""
    while peer not in node.kad.table:
        node.kad.activity.clear()
        await node.kad.activity.wait()


async def _checked(node: Node, peer: PeerId) -> None:
    """Wait until identify listed kad for ``peer`` and the request that
    admits it has been answered or failed."""
    kad = node.kad
    while not (kad.host.peerstore.supports(peer, kad.protocol)
               and peer not in kad._health._checking):
        kad.activity.clear()
        await kad.activity.wait()


async def test_peers_with_undialable_addresses_never_enter_the_table() -> None:
    tcp_loopback = b"\x04\x7f\x00\x00\x01\x06\x00\x50"  # /ip4/127.0.0.1/tcp/80
    unknown = b"\xe7\x07\x00"  # a protocol code nobody assigned: skipped
    async with (
        asyncio.timeout(TIMEOUT),
        kad_nodes(2) as (client, honest),
        raw_host(_answer_with(_closer(6, [tcp_loopback, unknown]))) as liar,
    ):
        await client.kad.bootstrap([full_addr(honest.host)])
        await client.host.connect(full_addr(liar))
        await _identified(client, liar.peer_id)
        result = await client.kad.find_closest(fake_peer_id(random.Random(9)).multihash)
        # The liar's answer was well-formed, so it counts as an answering
        # server; the six peers it named could not be reached and stay out.
        assert result.answered >= 2 and result.failed >= 6
        members = {c.peer_id for c in client.kad.table.contacts()}
        assert members == {honest.host.peer_id, liar.peer_id}, members
