import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import OverlayError
from overlay.kad.errors import InvalidKadMessage, InvalidProviderKey, InvalidRecord, StaleRecord
from overlay.kad.handler import KadServer, ServerConfig, handle_request
from overlay.kad.keyspace import Contact, fake_peer_id, kad_key
from overlay.identity import PeerId
from overlay.kad.messages import (
    ConnectionType, KadMessage, MessageType, PeerInfo, decode_message, encode_message,
)
from overlay.kad.providers import ProviderConfig, ProviderStore
from overlay.kad.records import Record, default_registry, immutable_key
from overlay.kad.routing import RoutingConfig, RoutingTable
from overlay.kad.store import MemoryRecordStore, StoreConfig
from tests.kad.helpers import NOW, brute_closest, contacts, ip4
from tests.kad.test_lookup import SeqValidator


def make_server(peers: list[Contact]) -> KadServer:
    me = Contact.of(fake_peer_id(random.Random(1)), (ip4(1, 1, 1, 1),))
    registry = default_registry()
    registry.register("seq", SeqValidator())
    table = RoutingTable(me.key, RoutingConfig(k=20), random.Random(2), NOW)
    table.load(peers)
    return KadServer(
        PeerInfo(me.peer_id, me.addrs),
        table,
        MemoryRecordStore(StoreConfig(), registry),
        ProviderStore(ProviderConfig()),
        ServerConfig(),
    )


PEERS = contacts(200, seed=5)
SENDER = PEERS[0]


def roundtrip(server: KadServer, request: KadMessage) -> KadMessage | None:
    """Through the codec both ways, as the network service does."""
    response = handle_request(server, decode_message(encode_message(request)), SENDER.peer_id, NOW)
    return None if response is None else decode_message(encode_message(response))


def test_find_node_returns_k_closest_without_the_sender() -> None:
    server = make_server(PEERS)
    target = SENDER.peer_id.multihash
    response = roundtrip(server, KadMessage(MessageType.FIND_NODE, target))
    assert response is not None and response.type is MessageType.FIND_NODE
    ids = [p.peer_id for p in response.closer_peers]
    members = list(server.table.contacts())
    expected = [c.peer_id for c in brute_closest([c for c in members if c != SENDER], kad_key(target), 20)]
    assert ids == expected and SENDER.peer_id not in ids


def test_find_node_for_the_server_itself_returns_only_itself() -> None:
    server = make_server(PEERS)
    response = roundtrip(server, KadMessage(MessageType.FIND_NODE, server.local.peer_id.multihash))
    assert response is not None and response.closer_peers == (server.local,)


def test_put_value_stores_and_echoes_then_get_returns_it() -> None:
    server = make_server(PEERS)
    value = b"immutable"
    record = Record(immutable_key(value), value)
    echo = roundtrip(server, KadMessage(MessageType.PUT_VALUE, record.key, record=record))
    assert echo is not None and echo.record == record
    stored = server.records.get(record.key, NOW)
    assert stored is not None and stored.publisher == SENDER.peer_id
    got = roundtrip(server, KadMessage(MessageType.GET_VALUE, record.key))
    assert got is not None and got.record is not None and got.record.value == value
    assert got.record.time_received.endswith("Z") and len(got.closer_peers) == 20


def test_bad_puts_raise_typed_errors_and_store_nothing() -> None:
    server = make_server(PEERS)
    with pytest.raises(InvalidRecord):
        handle_request(server, KadMessage(MessageType.PUT_VALUE, immutable_key(b"a"), record=Record(immutable_key(b"a"), b"b")), SENDER.peer_id, NOW)
    with pytest.raises(InvalidKadMessage):
        handle_request(server, KadMessage(MessageType.PUT_VALUE, b"/v/x"), SENDER.peer_id, NOW)
    with pytest.raises(InvalidKadMessage):
        handle_request(server, KadMessage(MessageType.PUT_VALUE, b"/seq/a", record=Record(b"/seq/b", b"1:x")), SENDER.peer_id, NOW)
    handle_request(server, KadMessage(MessageType.PUT_VALUE, b"/seq/a", record=Record(b"/seq/a", b"5:x")), SENDER.peer_id, NOW)
    with pytest.raises(StaleRecord):
        handle_request(server, KadMessage(MessageType.PUT_VALUE, b"/seq/a", record=Record(b"/seq/a", b"4:x")), SENDER.peer_id, NOW)
    assert len(server.records) == 1


def test_get_value_without_record_returns_closer_peers() -> None:
    server = make_server(PEERS)
    response = roundtrip(server, KadMessage(MessageType.GET_VALUE, b"/v/none"))
    assert response is not None and response.record is None and len(response.closer_peers) == 20


def test_add_provider_accepts_only_the_sender() -> None:
    server = make_server(PEERS)
    key = b"\x12\x20" + bytes(32)
    forged = PeerInfo(PEERS[1].peer_id, (ip4(6, 6, 6, 6),))
    own = PeerInfo(SENDER.peer_id, (ip4(7, 7, 7, 7),))
    assert roundtrip(server, KadMessage(MessageType.ADD_PROVIDER, key, provider_peers=(forged, own))) is None
    response = roundtrip(server, KadMessage(MessageType.GET_PROVIDERS, key))
    assert response is not None and response.provider_peers == (own,)
    with pytest.raises(InvalidProviderKey):
        handle_request(server, KadMessage(MessageType.ADD_PROVIDER, bytes(81), provider_peers=(own,)), SENDER.peer_id, NOW)
    with pytest.raises(InvalidProviderKey):
        handle_request(server, KadMessage(MessageType.GET_PROVIDERS, b""), SENDER.peer_id, NOW)


def test_responses_stay_under_the_limit_with_many_addresses() -> None:
    crowded = [Contact.of(c.peer_id, tuple(ip4(10, 0, i, j) for j in range(32))) for i, c in enumerate(contacts(60, seed=9))]
    server = make_server(crowded)
    response = handle_request(server, KadMessage(MessageType.FIND_NODE, b"\x12\x20" + bytes(32)), SENDER.peer_id, NOW)
    assert response is not None
    assert all(len(p.addrs) <= 8 for p in response.closer_peers)
    assert len(encode_message(response)) < 16 * 1024


def test_server_config_validation() -> None:
    with pytest.raises(ValueError):
        ServerConfig(k=41)

FUZZ_SERVER = make_server(PEERS[:60])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(MessageType)),
    st.one_of(st.binary(max_size=90), st.sampled_from([b"/v/", b"/pk/", b"/seq/x", immutable_key(b"z")])),
    st.one_of(st.none(), st.builds(Record, st.binary(max_size=40), st.binary(max_size=40))),
    st.lists(st.sampled_from(PEERS[:5]), max_size=3),
)
def test_fuzz_requests_only_raise_typed_errors(
    kind: MessageType, key: bytes, record: Record | None, providers: list[Contact]
) -> None:
    request = KadMessage(kind, key, record=record, provider_peers=tuple(PeerInfo(c.peer_id) for c in providers))
    try:
        response = handle_request(FUZZ_SERVER, decode_message(encode_message(request)), SENDER.peer_id, NOW)
    except OverlayError:
        return
    if response is not None:
        assert decode_message(encode_message(response)).type is kind


def with_connected(server: KadServer, known: dict[PeerId, PeerInfo], asked: list[PeerId],
                   config: ServerConfig | None = None) -> KadServer:
    def lookup(peer: PeerId) -> PeerInfo | None:
        asked.append(peer)
        return known.get(peer)
    return dataclasses.replace(server, connected_peer=lookup, config=config or server.config)


def test_find_node_puts_a_connected_target_outside_the_table_first() -> None:
    outsider = fake_peer_id(random.Random(77))
    info = PeerInfo(outsider, tuple(ip4(10, 1, 0, i) for i in range(12)), ConnectionType.CONNECTED)
    asked: list[PeerId] = []
    server = with_connected(make_server(PEERS), {outsider: info}, asked)
    assert outsider not in [c.peer_id for c in server.table.contacts()]
    response = roundtrip(server, KadMessage(MessageType.FIND_NODE, outsider.multihash))
    assert response is not None and asked == [outsider]
    first, *rest = response.closer_peers
    assert first.peer_id == outsider and first.addrs == info.addrs[:8]
    assert first.connection is ConnectionType.CONNECTED
    members = [c for c in server.table.contacts() if c != SENDER]
    expected = [c.peer_id for c in brute_closest(members, kad_key(outsider.multihash), 19)]
    assert [p.peer_id for p in rest] == expected and len(response.closer_peers) == 20


def test_find_node_lists_a_connected_table_member_once_and_first() -> None:
    member = PEERS[150]
    info = PeerInfo(member.peer_id, (ip4(10, 2, 0, 1),))
    small = ServerConfig(k=3)
    server = with_connected(make_server(PEERS), {member.peer_id: info}, [], small)
    response = roundtrip(server, KadMessage(MessageType.FIND_NODE, member.peer_id.multihash))
    assert response is not None
    ids = [p.peer_id for p in response.closer_peers]
    assert ids[0] == member.peer_id and ids.count(member.peer_id) == 1 and len(ids) == 3
    assert response.closer_peers[0].addrs == info.addrs


def test_find_node_leaves_out_unknown_addressless_sender_and_non_peer_targets() -> None:
    addressless = fake_peer_id(random.Random(78))
    known = {addressless: PeerInfo(addressless),
             SENDER.peer_id: PeerInfo(SENDER.peer_id, (ip4(10, 3, 0, 1),))}
    asked: list[PeerId] = []
    server = with_connected(make_server(PEERS), known, asked)
    plain = make_server(PEERS)
    for key in (addressless.multihash, fake_peer_id(random.Random(79)).multihash,
                SENDER.peer_id.multihash, b"/v/not-a-peer"):
        got = roundtrip(server, KadMessage(MessageType.FIND_NODE, key))
        assert got == roundtrip(plain, KadMessage(MessageType.FIND_NODE, key)), key
    # The sender (never told about itself) and a non-peer key are not looked up.
    assert SENDER.peer_id not in asked and len(asked) == 2
    itself = roundtrip(server, KadMessage(MessageType.FIND_NODE, server.local.peer_id.multihash))
    assert itself is not None and itself.closer_peers == (server.local,)
