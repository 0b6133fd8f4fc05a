"""The relay's pure core at fixed ``now``: reservations, expiry, limits
per prefix and in total, admission, the allowlist and the counters."""

from __future__ import annotations

import pytest

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.relay.messages import Limit, Status
from overlay.relay.server_core import (
    Admitted,
    Granted,
    RelayCore,
    RelayLimits,
    Refused,
    source_prefix,
)


def pid() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


RELAY = pid()


def test_reserve_grants_with_ttl_and_default_limit() -> None:
    core = RelayCore(RELAY, RelayLimits(reservation_ttl=100))
    a = pid()
    got = core.reserve(a, "10.0.0.1", now=5.0)
    assert got == Granted(105.0, False, Limit(120, 128 * 1024))
    assert core.has_reservation(a, 104.9) and not core.has_reservation(a, 105.0)
    assert core.next_deadline() == 105.0


def test_renewal_keeps_the_slot_and_extends() -> None:
    core = RelayCore(RELAY, RelayLimits(reservation_ttl=100, max_reservations=1))
    a = pid()
    core.reserve(a, "10.0.0.1", 0.0)
    again = core.reserve(a, "10.0.0.1", 50.0)
    assert isinstance(again, Granted) and again.renewed and again.expires == 150.0
    assert core.stats().reservations_held == 1 and core.stats().reservations_renewed == 1


def test_expiry_frees_slots_at_now() -> None:
    core = RelayCore(RELAY, RelayLimits(reservation_ttl=10, max_reservations=1))
    a, b = pid(), pid()
    core.reserve(a, "10.0.0.1", 0.0)
    assert core.reserve(b, "10.0.0.2", 9.9) == Refused(Status.RESERVATION_REFUSED,
                                                       "reservation_limit")
    assert isinstance(core.reserve(b, "10.0.0.2", 10.0), Granted)
    assert [p for p, _ in core.reservations()] == [b]


def test_prefix_limit_and_allowlist_bypass() -> None:
    allowed = pid()
    core = RelayCore(RELAY, RelayLimits(max_reservations_per_prefix=2, ipv4_prefix=24,
                                        allowlist=frozenset({allowed})))
    assert isinstance(core.reserve(pid(), "10.0.0.1", 0), Granted)
    assert isinstance(core.reserve(pid(), "10.0.0.2", 0), Granted)
    refused = core.reserve(pid(), "10.0.0.3", 0)
    assert refused == Refused(Status.RESERVATION_REFUSED, "prefix_limit")
    assert isinstance(core.reserve(pid(), "10.0.1.3", 0), Granted)
    assert isinstance(core.reserve(allowed, "10.0.0.4", 0), Granted)
    assert core.stats().refusals == {"prefix_limit": 1}


def test_source_prefix_groups() -> None:
    assert source_prefix("10.1.2.3", 24) == "10.1.2.0/24"
    assert source_prefix("::ffff:10.1.2.3", 32) == "10.1.2.3/32"
    assert source_prefix("2001:db8::1", 32, 48) == "2001:db8::/48"
    assert source_prefix(None) == source_prefix("not an ip") == "unknown"


def test_admission_needs_the_targets_reservation() -> None:
    core = RelayCore(RELAY)
    a, b = pid(), pid()
    assert core.admit(b, a, 0.0) == Refused(Status.NO_RESERVATION, "no_reservation")
    core.reserve(a, "10.0.0.1", 0.0)
    admitted = core.admit(b, a, 1.0)
    assert isinstance(admitted, Admitted) and admitted.limit == Limit(120, 128 * 1024)
    assert core.stats().circuits_active == 1
    core.circuit_closed(admitted.circuit_id, 300, cut_by_limit=True)
    stats = core.stats()
    assert (stats.circuits_active, stats.circuits_total, stats.bytes_relayed,
            stats.circuits_cut_by_limit) == (0, 1, 300, 1)
    # Once the reservation is gone, so is reachability.
    assert core.admit(b, a, 3601.0).status is Status.NO_RESERVATION  # type: ignore[union-attr]


def test_bytes_relayed_counts_live_circuits_once() -> None:
    core = RelayCore(RELAY)
    a, b = pid(), pid()
    core.reserve(a, "10.0.0.1", 0.0)
    first, second = core.admit(b, a, 0.0), core.admit(pid(), a, 0.0)
    assert isinstance(first, Admitted) and isinstance(second, Admitted)
    core.circuit_progress(first.circuit_id, 100)
    core.circuit_progress(second.circuit_id, 7)
    core.circuit_progress(first.circuit_id, 50)
    assert core.stats().bytes_relayed == 157
    # The total given at the end replaces the live count, never adds to it.
    core.circuit_closed(first.circuit_id, 150, cut_by_limit=False)
    assert core.stats().bytes_relayed == 157
    core.circuit_progress(first.circuit_id, 999)  # late news of an ended circuit
    assert core.stats().bytes_relayed == 157


def test_self_and_relay_targets_are_denied() -> None:
    core = RelayCore(RELAY)
    a = pid()
    core.reserve(a, "10.0.0.1", 0.0)
    assert core.admit(a, a, 0.0) == Refused(Status.PERMISSION_DENIED, "bad_target")
    assert core.admit(a, RELAY, 0.0) == Refused(Status.PERMISSION_DENIED, "bad_target")
    assert core.reserve(RELAY, "10.0.0.1", 0.0) == Refused(Status.PERMISSION_DENIED,
                                                           "reserve_self")


def test_circuit_limits_per_peer_and_total() -> None:
    core = RelayCore(RELAY, RelayLimits(max_circuits_per_peer=2, max_circuits=3))
    a, c = pid(), pid()
    core.reserve(a, "10.0.0.1", 0.0)
    core.reserve(c, "10.0.0.3", 0.0)
    first = core.admit(pid(), a, 0.0)
    assert isinstance(first, Admitted)
    assert isinstance(core.admit(pid(), a, 0.0), Admitted)
    assert core.admit(pid(), a, 0.0) == Refused(Status.RESOURCE_LIMIT_EXCEEDED,
                                                "peer_circuit_limit")
    assert isinstance(core.admit(pid(), c, 0.0), Admitted)
    assert core.admit(pid(), c, 0.0) == Refused(Status.RESOURCE_LIMIT_EXCEEDED,
                                                "circuit_limit")
    core.circuit_closed(first.circuit_id, 0, cut_by_limit=False)
    assert isinstance(core.admit(pid(), a, 0.0), Admitted)
    assert core.stats().refusals == {"peer_circuit_limit": 1, "circuit_limit": 1}


def test_allowlisted_circuits_are_unlimited() -> None:
    a, b = pid(), pid()
    core = RelayCore(RELAY, RelayLimits(allowlist=frozenset({a, b})))
    core.reserve(a, "10.0.0.1", 0.0)
    admitted = core.admit(b, a, 0.0)
    assert isinstance(admitted, Admitted) and admitted.limit is None
    outsider = core.admit(pid(), a, 0.0)
    assert isinstance(outsider, Admitted) and outsider.limit is not None


def test_unlimited_config_sends_no_limit() -> None:
    core = RelayCore(RELAY, RelayLimits(circuit_duration=None, circuit_data=None))
    a = pid()
    granted = core.reserve(a, None, 0.0)
    assert isinstance(granted, Granted) and granted.limit is None


@pytest.mark.parametrize("bad", [
    {"reservation_ttl": 0}, {"max_reservations": 0}, {"ipv4_prefix": 33},
    {"circuit_data": 0}, {"circuit_duration": -1.0}])
def test_limits_validate(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RelayLimits(**bad)  # type: ignore[arg-type]
