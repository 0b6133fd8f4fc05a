"""Diversity groups from observed addresses, and who is exempt."""

from __future__ import annotations

import random

from overlay.kad.keyspace import Contact, fake_peer_id, peer_key
from overlay.kad.policy import FailureKind, NodePolicy, classify_failure
from overlay.kad.routing import (
    AddOutcome,
    RoutingConfig,
    RoutingTable,
    observed_groups,
    runs_on_local,
)
from overlay.errors import StreamReset


def test_groups_come_from_the_observed_prefix() -> None:
    assert observed_groups("8.8.8.9", exempt_local=True) == observed_groups(
        "8.8.8.200", exempt_local=True)
    assert observed_groups("8.8.8.9", exempt_local=True) != observed_groups(
        "8.8.9.9", exempt_local=True)
    assert observed_groups("2606:4700:1:2::1", exempt_local=True) == observed_groups(
        "2606:4700:1:ffff::2", exempt_local=True)
    assert observed_groups("8.8.8.9", exempt_local=True) != ()
    assert observed_groups(None, exempt_local=False) == ()  # relayed: no IP of its own


def test_local_sources_are_exempt_only_when_asked() -> None:
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.1.5", "fe80::1"):
        assert observed_groups(ip, exempt_local=True) == ()
    # Counted: each loopback address a group of its own, private ones by /24.
    assert observed_groups("127.0.0.1", exempt_local=False) != observed_groups(
        "127.0.0.2", exempt_local=False)
    assert observed_groups("10.1.2.3", exempt_local=False) == observed_groups(
        "10.1.2.99", exempt_local=False)


def test_a_node_runs_on_local_addresses_or_not() -> None:
    assert runs_on_local(["127.0.0.1"]) and runs_on_local(["192.168.1.2"])
    assert runs_on_local(["0.0.0.0"])  # the wildcard covers the LAN
    assert not runs_on_local(["8.8.8.8", "2606:4700::1111"])
    assert not runs_on_local(["not-an-ip"])


def test_identities_from_one_observed_address_get_its_share() -> None:
    rng = random.Random(3)
    config = RoutingConfig(exempt_local=False)
    table = RoutingTable(peer_key(fake_peer_id(rng)), config, rng, 0.0)
    groups = observed_groups("127.0.88.1", exempt_local=False)
    outcomes = []
    for _ in range(30):
        peer = fake_peer_id(rng)
        outcomes.append(table.add(Contact(peer, peer_key(peer), (), groups), 0.0).outcome)
    assert outcomes.count(AddOutcome.ADDED) <= config.max_per_group_per_table
    assert AddOutcome.REJECTED_DIVERSITY in outcomes


def test_a_refusal_on_a_live_connection_does_not_evict() -> None:
    rng = random.Random(4)
    table = RoutingTable(peer_key(fake_peer_id(rng)), RoutingConfig(), rng, 0.0)
    peer = fake_peer_id(rng)
    table.add(Contact.of(peer), 0.0)
    policy = NodePolicy(table)
    # An overloaded remote resets the stream right after negotiation and
    # keeps the connection: busy, not dead.
    assert policy.on_request_failed(peer, FailureKind.RESET, connected=True, now=1.0) is None
    assert peer in table and policy.evictions == 0
    assert classify_failure(StreamReset("reset by the remote")) is FailureKind.RESET
