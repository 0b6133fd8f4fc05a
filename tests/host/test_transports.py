"""The transport interface: which transport takes which multiaddr, circuit
address parsing, and the dial-target checks the CLI, the API and kad share."""

from __future__ import annotations

import argparse

import pytest
from multiaddr import Multiaddr

from overlay.cli.core import _connect_target
from overlay.errors import InvalidMultiaddr
from overlay.host import Host, QuicTransport
from overlay.host.circuit import CircuitTransport
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.net_rpc import dialable_addr
from overlay.multiaddrs import (
    dial_target_error,
    is_dialable_multiaddr,
    parse_circuit_multiaddr,
)


def _peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


R, T = _peer(), _peer()
QUIC = "/ip4/192.0.2.7/udp/4001/quic-v1"


def test_parse_circuit_addresses() -> None:
    full = parse_circuit_multiaddr(f"{QUIC}/p2p/{R}/p2p-circuit/p2p/{T}")
    assert full.relay == R and full.target == T and full.relay_has_address
    assert str(full.relay_addr) == f"{QUIC}/p2p/{R}"
    bare = parse_circuit_multiaddr(f"/p2p/{R}/p2p-circuit")
    assert bare.target is None and not bare.relay_has_address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (QUIC, "not a circuit address"),
        (f"/p2p-circuit/p2p/{T}", "must follow /p2p/<relay>"),
        (f"/p2p/{R}/p2p-circuit/p2p/{T}/p2p-circuit/p2p/{R}", "relays over a relay"),
        (f"/p2p/{R}/p2p-circuit/ip4/1.2.3.4", "only /p2p/<target>"),
        (f"/p2p/{R}/p2p-circuit/p2p/{R}", "cannot relay to itself"),
    ],
)
def test_bad_circuit_addresses_say_why(text: str, message: str) -> None:
    with pytest.raises(InvalidMultiaddr, match=message):
        parse_circuit_multiaddr(text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (QUIC, True),
        (f"{QUIC}/p2p/{T}", True),
        (f"{QUIC}/p2p/{R}/p2p-circuit/p2p/{T}", True),
        (f"/p2p/{R}/p2p-circuit/p2p/{T}", True),
        ("/ip4/192.0.2.7/tcp/4001", False),
        (f"/ip4/192.0.2.7/tcp/4001/p2p/{R}/p2p-circuit/p2p/{T}", False),
        (f"/p2p/{T}", False),
    ],
)
def test_dialable_shapes(text: str, ok: bool) -> None:
    assert is_dialable_multiaddr(text) is ok


def test_dial_target_errors_are_one_line_and_name_the_part() -> None:
    assert dial_target_error(f"/p2p/{T}") is None  # the DHT finds it
    assert dial_target_error(f"/p2p/{R}/p2p-circuit/p2p/{T}") is None
    error = dial_target_error(f"/ip4/1.2.3.4/tcp/1/p2p/{R}/p2p-circuit/p2p/{T}")
    assert error is not None and "/tcp" in error and "\n" not in error
    error = dial_target_error("/ip4/1.2.3.4/udp/1/quic")
    assert error is not None and "quic-v1" in error


def test_cli_targets_accept_circuits_and_refuse_the_rest() -> None:
    text = f"{QUIC}/p2p/{R}/p2p-circuit/p2p/{T}"
    assert _connect_target(text) == text
    with pytest.raises(argparse.ArgumentTypeError, match="/tcp"):
        _connect_target("/ip4/1.2.3.4/tcp/1")


def test_kad_keeps_circuit_addresses_of_the_peer_only() -> None:
    circuit = Multiaddr(f"{QUIC}/p2p/{R}/p2p-circuit/p2p/{T}")
    assert dialable_addr(circuit.to_bytes(), T) == Multiaddr(f"{QUIC}/p2p/{R}/p2p-circuit")
    bare = Multiaddr(f"/p2p/{R}/p2p-circuit")
    assert dialable_addr(bare.to_bytes(), T) == bare
    other = _peer()
    assert dialable_addr(circuit.to_bytes(), other) is None  # names another target
    assert dialable_addr(bare.to_bytes(), R) is None  # a relay relaying to itself
    unspecified = Multiaddr(f"/ip4/0.0.0.0/udp/4001/quic-v1/p2p/{R}/p2p-circuit")
    assert dialable_addr(unspecified.to_bytes(), T) is None
    assert dialable_addr(Multiaddr(f"{QUIC}/p2p/{T}").to_bytes(), T) == Multiaddr(QUIC)


def test_the_host_routes_each_address_to_its_transport() -> None:
    host = Host(Ed25519PrivateKey.generate())
    quic, circuit = host.transports()
    assert isinstance(quic, QuicTransport) and isinstance(circuit, CircuitTransport)
    assert quic.path == "direct" and circuit.path == "relayed"
    assert quic.can_dial(Multiaddr(QUIC)) and not circuit.can_dial(Multiaddr(QUIC))
    relayed = Multiaddr(f"{QUIC}/p2p/{R}/p2p-circuit")
    assert circuit.can_dial(relayed) and not quic.can_dial(relayed)
    assert host.can_dial(f"{QUIC}/p2p/{T}") and host.can_dial(f"{relayed}/p2p/{T}")
    assert not host.can_dial("/ip4/1.2.3.4/tcp/1")
    assert not circuit.can_listen(relayed) and quic.can_listen(Multiaddr(QUIC))


async def test_connect_names_the_bad_part_of_an_address() -> None:
    async with Host(Ed25519PrivateKey.generate()) as host:
        with pytest.raises(InvalidMultiaddr, match="quic-v1"):
            await host.connect("/ip4/127.0.0.1/udp/1/quic")
        with pytest.raises(InvalidMultiaddr, match="must follow /p2p/<relay>"):
            await host.connect(f"/p2p-circuit/p2p/{T}")
        with pytest.raises(InvalidMultiaddr, match="does not name the peer"):
            await host.connect(f"/p2p/{R}/p2p-circuit")


async def test_advertised_addresses_reach_identify_and_the_peer_record(quic_hosts) -> None:  # type: ignore[no-untyped-def]
    a, rec_a = await quic_hosts()
    b, rec_b = await quic_hosts()
    circuit = Multiaddr(f"{a.listen_addrs()[0]}/p2p/{R}/p2p-circuit")
    await b.connect(f"{a.listen_addrs()[0]}/p2p/{a.peer_id}")
    info = await b.identify(a.peer_id)
    assert circuit not in info.listen_addrs
    # A pushes only to peers it knows take pushes: wait until A identified B.
    await rec_a.wait_for(lambda: a.peerstore.supports(b.peer_id, "/ipfs/id/push/1.0.0"))
    a.add_advertised_addrs([circuit])
    assert a.advertised_addrs()[-1] == circuit and circuit not in a.listen_addrs()
    # The push carries the new signed record; B's peerstore follows it.
    await rec_b.wait_for(lambda: circuit in b.peerstore.addrs(a.peer_id))
    info = await b.identify(a.peer_id)
    assert circuit in info.listen_addrs and info.record_seq is not None
    a.remove_advertised_addrs([circuit])
    await rec_b.wait_for(lambda: circuit not in b.peerstore.addrs(a.peer_id))


def test_a_circuit_address_puts_its_peer_in_no_ip_group() -> None:
    from overlay.kad.addrs import ip_groups

    direct = Multiaddr("/ip4/8.8.8.8/udp/4001/quic-v1").to_bytes()
    circuit = Multiaddr(f"/ip4/8.8.4.4/udp/4001/quic-v1/p2p/{R}/p2p-circuit").to_bytes()
    # The relay's IP is shared by everyone it relays for.
    assert ip_groups((circuit,)) == ()
    assert ip_groups((direct, circuit)) == (b"4\x08\x08\x08",)
