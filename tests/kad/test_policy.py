"""The node policy: which failures evict, which closes need a check."""

from __future__ import annotations

import random

import pytest

from overlay.errors import (
    ConnectionClosed,
    DialError,
    LimitExceeded,
    PeerIdMismatch,
    ProtocolNotSupported,
    StreamReset,
)
from overlay.kad.keyspace import fake_peer_id, peer_key
from overlay.kad.policy import (
    CheckPeer,
    FailureKind,
    NodePolicy,
    ProbeConnection,
    classify_failure,
    describe_failure,
)
from overlay.kad.routing import RoutingConfig, RoutingTable
from tests.kad.helpers import NOW, contact_in_bucket

LOCAL = peer_key(fake_peer_id(random.Random(42)))


def policy_with(count: int = 3) -> tuple[NodePolicy, list]:  # type: ignore[type-arg]
    table = RoutingTable(LOCAL, RoutingConfig(), random.Random(1), NOW)
    rng = random.Random(2)
    contacts = [contact_in_bucket(LOCAL, 255, rng) for _ in range(count)]
    for contact in contacts:
        table.add(contact, NOW)
    return NodePolicy(table), contacts


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), FailureKind.TIMEOUT),
        (DialError("refused"), FailureKind.UNREACHABLE),
        (ConnectionRefusedError(), FailureKind.UNREACHABLE),
        (PeerIdMismatch("a", "b"), FailureKind.MISMATCH),
        (ProtocolNotSupported(["/ovl/kad/1.0.0"]), FailureKind.REFUSED),
        (StreamReset("reset"), FailureKind.RESET),
        (ConnectionClosed("gone"), FailureKind.BROKEN),
        (LimitExceeded("full"), FailureKind.LOCAL),
    ],
)
def test_failures_are_classified(exc: BaseException, kind: FailureKind) -> None:
    assert classify_failure(exc) is kind


def test_descriptions_name_the_cause() -> None:
    assert describe_failure(DialError("no route"), "/p").startswith("unreachable")
    assert "peer ID mismatch" in describe_failure(PeerIdMismatch("a", "b"), "/p")
    assert describe_failure(ProtocolNotSupported(["/p"]), "/p") == "refused the kad protocol /p"


@pytest.mark.parametrize("kind", [FailureKind.UNREACHABLE, FailureKind.BROKEN, FailureKind.REFUSED])
def test_an_outright_failure_evicts_even_with_a_connection(kind: FailureKind) -> None:
    policy, (dead, *_) = policy_with()
    assert policy.on_request_failed(dead.peer_id, kind, connected=True, now=NOW) is None
    assert dead.peer_id not in policy.table and policy.evictions == 1
    assert policy.worth_asking([dead], NOW + 1) == []


def test_a_timeout_evicts_only_without_a_connection() -> None:
    policy, (slow, dead, _) = policy_with()
    probe = policy.on_request_failed(slow.peer_id, FailureKind.TIMEOUT, connected=True, now=NOW)
    assert probe == ProbeConnection(slow.peer_id) and slow.peer_id in policy.table
    policy.on_check_result(slow.peer_id, False, NOW)
    assert slow.peer_id not in policy.table
    assert policy.on_request_failed(dead.peer_id, FailureKind.TIMEOUT, connected=False, now=NOW) is None
    assert dead.peer_id not in policy.table


def test_a_reset_on_a_live_connection_is_a_refusal_not_a_death() -> None:
    policy, (refusing, gone, _) = policy_with()
    assert policy.on_request_failed(refusing.peer_id, FailureKind.RESET, connected=True, now=NOW) is None
    assert refusing.peer_id in policy.table
    policy.on_request_failed(gone.peer_id, FailureKind.RESET, connected=False, now=NOW)
    assert gone.peer_id not in policy.table


def test_our_own_limits_evict_nobody() -> None:
    policy, (peer, *_) = policy_with()
    policy.on_request_failed(peer.peer_id, FailureKind.LOCAL, connected=False, now=NOW)
    assert peer.peer_id in policy.table


def test_closes() -> None:
    policy, (leaving, silent, closed) = policy_with()
    assert policy.on_closed(leaving.peer_id, going_away=True, silent=False, now=NOW) is None
    assert leaving.peer_id not in policy.table
    assert policy.on_closed(silent.peer_id, going_away=False, silent=True, now=NOW) == CheckPeer(silent)
    policy.on_check_result(silent.peer_id, True, NOW)
    assert silent.peer_id in policy.table
    # A close the peer sent (or we did) proves nothing is wrong.
    assert policy.on_closed(closed.peer_id, going_away=False, silent=False, now=NOW) is None
    assert closed.peer_id in policy.table
