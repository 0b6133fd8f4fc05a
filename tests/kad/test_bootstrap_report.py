"""Bootstrap reports: who was reached, and why the others were not."""

from __future__ import annotations

import random

from overlay.errors import DialError, PeerIdMismatch, ProtocolNotSupported
from overlay.kad.bootstrap_report import bootstrap_contacts, bootstrap_report
from overlay.kad.keyspace import Contact, fake_peer_id


def _contacts(n: int) -> list[Contact]:
    rng = random.Random(3)
    return [Contact.of(fake_peer_id(rng)) for _ in range(n)]


def test_each_unusable_peer_gets_its_reason() -> None:
    ok, dead, wrong, foreign, unasked = _contacts(5)
    mismatch = DialError("could not reach")
    mismatch.__cause__ = PeerIdMismatch("a", "b")
    outcomes = {
        ok.peer_id: None,
        dead.peer_id: DialError("no QUIC response"),
        wrong.peer_id: mismatch,
        foreign.peer_id: ProtocolNotSupported(["/ovl/kad/1.0.0"]),
    }
    queried = [ok.peer_id, dead.peer_id, wrong.peer_id, foreign.peer_id]
    report = bootstrap_report([ok, dead, wrong, foreign, unasked], outcomes, queried, 4, "/ovl/kad/1.0.0", 0.2)
    assert report.ok and report.reached == (ok.peer_id,)
    reasons = dict(report.problems)
    assert reasons[dead.peer_id].startswith("unreachable")
    assert reasons[wrong.peer_id].startswith("peer ID mismatch")
    assert reasons[foreign.peer_id] == "refused the kad protocol /ovl/kad/1.0.0"
    assert unasked.peer_id not in reasons  # the lookup converged without it
    assert report.summary().startswith("kad bootstrap: reached 1 of 5 bootstrap peer(s), routing table has 4")


def test_nobody_reached_says_why_in_one_line() -> None:
    (dead,) = _contacts(1)
    report = bootstrap_report([dead], {}, [dead.peer_id], 0, "/p", 2.0)
    assert not report.ok
    assert "none usable" in report.summary() and "no answer" in report.summary()
    assert "no bootstrap peer is configured" in bootstrap_report([], {}, [], 0, "/p", 0.0).summary()


def test_our_own_address_is_not_a_bootstrap_peer() -> None:
    me, other = (fake_peer_id(random.Random(i)) for i in (1, 2))
    addrs = [f"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{me}", f"/ip4/127.0.0.1/udp/4002/quic-v1/p2p/{other}"]
    assert [c.peer_id for c in bootstrap_contacts(addrs, me)] == [other]
