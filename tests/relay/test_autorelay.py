"""Auto-relay: the pure plan at fixed ``now``, and the loop on loopback
reserving on a ``--relay``, renewing it and advertising circuit addresses."""

from __future__ import annotations

import asyncio

import pytest

from overlay.errors import InvalidMultiaddr
from overlay.host.events import HostListener
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.relay.autorelay import AutoRelay, AutoRelayConfig, RelayPlan, hop_candidates
from overlay.relay.messages import HOP_PROTOCOL
from overlay.relay.server_core import RelayLimits

from tests.relay.conftest import RelayNet


def pid() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


def test_plan_static_always_auto_only_when_private() -> None:
    s, c1, c2, c3 = pid(), pid(), pid(), pid()
    plan = RelayPlan(AutoRelayConfig(max_auto=2), (s,))
    assert plan.wanted(False, [c1, c2], []) == [s]
    assert plan.wanted(True, [c1, c2, c3], []) == [s, c1, c2]
    # Relays already held are kept before fresh candidates.
    assert plan.wanted(True, [c1, c2, c3], [c3]) == [s, c3, c1]


def test_plan_renewal_and_backoff() -> None:
    r = pid()
    plan = RelayPlan(AutoRelayConfig(retry_initial=5, retry_max=12))
    assert plan.due(r, 0.0)
    plan.reserved(r, 0.0, lifetime=100.0)
    assert not plan.due(r, 74.9) and plan.due(r, 75.0)
    assert plan.next_deadline([r]) == 75.0
    plan.failed(r, 100.0)
    assert plan.in_backoff(r, 104.0) and plan.due(r, 105.0)
    plan.failed(r, 105.0)
    assert plan.next_deadline([r]) == 115.0
    plan.failed(r, 115.0)
    assert plan.next_deadline([r]) == 127.0  # capped at retry_max


def test_config_rejects_relay_without_peer_id() -> None:
    with pytest.raises(InvalidMultiaddr):
        AutoRelayConfig(static=("/ip4/127.0.0.1/udp/1/quic-v1",))


def test_hop_candidates_prefer_introducers() -> None:
    a, b, c = pid(), pid(), pid()
    serves = {a, c}
    got = hop_candidates([a, b, c], lambda p, proto: proto == HOP_PROTOCOL and p in serves,
                         preferred=[c])
    assert got == [c, a]


@pytest.mark.parametrize("limits", [RelayLimits(reservation_ttl=2.0)])
async def test_static_relay_reserved_renewed_and_advertised(net: RelayNet) -> None:
    node = await net.make_node()
    changes: list[tuple[list[str], list[str]]] = []

    def on_addrs(added: list[object], removed: list[object]) -> None:
        changes.append(([str(a) for a in added], [str(a) for a in removed]))
        node.host.add_advertised_addrs(added)  # type: ignore[arg-type]
        node.host.remove_advertised_addrs(removed)  # type: ignore[arg-type]

    pushed = asyncio.Event()
    net.relay.add_listener(HostListener(identified=lambda peer, info: pushed.set()))
    config = AutoRelayConfig(static=(net.relay_addr(),))
    async with AutoRelay(node.host, node.client, config, on_addrs=on_addrs) as auto:
        async with asyncio.timeout(10):
            while not node.client.reservations():
                node.client.changed.clear()
                await node.client.changed.wait()
        first = node.client.reservations()[0]
        circuit = f"{net.relay_addr()}/p2p-circuit"
        assert [str(a) for a in auto.advertised()] == [circuit]
        assert circuit in [str(a) for a in node.host.advertised_addrs()]
        # Identify push carries it to connected peers (here the relay).
        async with asyncio.timeout(10):
            while circuit not in [str(a) for a in net.relay.peerstore.addrs(node.host.peer_id)]:
                pushed.clear()
                await pushed.wait()
        # The 2 s reservation is renewed at 1.5 s, before it lapses.
        async with asyncio.timeout(10):
            while net.server.stats().reservations_renewed < 1:
                node.client.changed.clear()
                await node.client.changed.wait()
        assert node.client.reservations()[0].expire >= first.expire
    assert changes[-1] == ([], [circuit])


async def test_reserves_again_after_the_relay_connection_drops(net: RelayNet) -> None:
    node = await net.make_node()
    config = AutoRelayConfig(static=(net.relay_addr(),))
    async with AutoRelay(node.host, node.client, config):
        async with asyncio.timeout(10):
            while not node.client.reservations():
                node.client.changed.clear()
                await node.client.changed.wait()
            node.host.disconnect(net.relay.peer_id)
            # Dropped with the connection, then granted anew (a second grant).
            while net.server.stats().reservations_granted < 2:
                node.client.changed.clear()
                await node.client.changed.wait()
        assert node.client.reservations()
        assert net.server.stats().reservations_held == 1
