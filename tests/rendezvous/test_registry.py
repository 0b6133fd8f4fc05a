"""The rendezvous point's registry at a fixed `now`: TTLs and expiry,
limits, pagination with cookies, and records that must prove their peer."""

from __future__ import annotations

import random

import pytest

from overlay.identity import PeerId, PeerRecord, seal_peer_record
from overlay.rendezvous import (
    Discover,
    DiscoverResponse,
    Register,
    Registry,
    RegistryConfig,
    Status,
    source_prefix,
)
from overlay.identity import open_peer_record

from tests.rendezvous.helpers import NOW, SECRET, addr, key, peer, record, reg, registry

IP = "192.0.2.1"


def peers_in(page: DiscoverResponse) -> list[PeerId]:
    return [open_peer_record(r.signed_peer_record).peer_id for r in page.registrations]


def test_register_grants_the_default_ttl_and_discover_returns_it() -> None:
    r = registry()
    reply = r.register(peer(1), IP, reg(1), NOW)
    assert (reply.status, reply.ttl) == (Status.OK, 7200)
    page = r.discover(Discover("app"), NOW + 100)
    assert page.status == Status.OK and peers_in(page) == [peer(1)]
    assert page.registrations[0].ttl == 7100 and page.registrations[0].ns == "app"
    assert open_peer_record(page.registrations[0].signed_peer_record).addrs == (addr(1),)


@pytest.mark.parametrize("ttl, status", [
    (7199, Status.E_INVALID_TTL), (7200, Status.OK), (72 * 3600, Status.OK),
    (72 * 3600 + 1, Status.E_INVALID_TTL), (2**64 - 1, Status.E_INVALID_TTL)])
def test_ttl_bounds_follow_the_spec(ttl: int, status: Status) -> None:
    reply = registry().register(peer(1), IP, reg(1, ttl=ttl), NOW)
    assert reply.status == status
    assert reply.ttl == (ttl if status == Status.OK else 0)


def test_registrations_expire_at_their_ttl() -> None:
    r = registry(min_ttl=60)
    r.register(peer(1), IP, reg(1, ttl=60), NOW)
    r.register(peer(2), IP, reg(2, ttl=120), NOW)
    assert r.next_deadline() == NOW + 60
    assert peers_in(r.discover(Discover("app"), NOW + 59.9)) == [peer(1), peer(2)]
    assert peers_in(r.discover(Discover("app"), NOW + 60)) == [peer(2)]
    assert r.expire(NOW + 120) == 1 and len(r) == 0 and r.next_deadline() is None


def test_a_refresh_supersedes_the_ttl_without_counting_twice() -> None:
    r = registry(min_ttl=60, max_per_peer=1)
    r.register(peer(1), IP, reg(1, ttl=60), NOW)
    assert r.register(peer(1), IP, reg(1, ttl=600), NOW + 50).ttl == 600
    assert len(r) == 1
    assert peers_in(r.discover(Discover("app"), NOW + 300)) == [peer(1)]
    assert r.expire(NOW + 649) == 0 and r.expire(NOW + 650) == 1


def test_unregister_removes_and_frees_the_slot() -> None:
    r = registry(max_per_peer=1)
    r.register(peer(1), IP, reg(1, "a"), NOW)
    assert r.register(peer(1), IP, reg(1, "b"), NOW).status == Status.E_UNAVAILABLE
    assert r.unregister(peer(1), "a", NOW) is True
    assert r.unregister(peer(1), "a", NOW) is False
    assert r.discover(Discover("a"), NOW).registrations == ()
    assert r.register(peer(1), IP, reg(1, "b"), NOW).status == Status.OK


def test_unregister_touches_only_the_callers_registration() -> None:
    r = registry()
    r.register(peer(1), IP, reg(1), NOW)
    assert r.unregister(peer(2), "app", NOW) is False
    assert peers_in(r.discover(Discover("app"), NOW)) == [peer(1)]


def test_limit_per_peer() -> None:
    r = registry(max_per_peer=2)
    assert [r.register(peer(1), IP, reg(1, ns), NOW).status for ns in "abc"] == [
        Status.OK, Status.OK, Status.E_UNAVAILABLE]
    assert "at most 2 namespaces" in r.register(peer(1), IP, reg(1, "c"), NOW).status_text
    assert r.register(peer(1), IP, reg(1, "a"), NOW).status == Status.OK  # refresh


def test_limit_per_namespace() -> None:
    r = registry(max_per_namespace=2)
    statuses = [r.register(peer(n), IP, reg(n), NOW).status for n in range(3)]
    assert statuses == [Status.OK, Status.OK, Status.E_UNAVAILABLE]
    assert r.register(peer(2), IP, reg(2, "other"), NOW).status == Status.OK


def test_limit_per_source_prefix() -> None:
    r = registry(max_per_prefix=2)
    assert r.register(peer(1), "198.51.100.1", reg(1), NOW).status == Status.OK
    assert r.register(peer(2), "198.51.100.200", reg(2), NOW).status == Status.OK
    refused = r.register(peer(3), "198.51.100.7", reg(3), NOW)
    assert refused.status == Status.E_UNAVAILABLE and "198.51.100.0/24" in refused.status_text
    assert r.register(peer(3), "198.51.101.7", reg(3), NOW).status == Status.OK
    r.unregister(peer(1), "app", NOW)
    assert r.register(peer(4), "198.51.100.7", reg(4), NOW).status == Status.OK


def test_limit_in_total() -> None:
    r = registry(max_total=3)
    assert [r.register(peer(n), f"203.0.{n}.1", reg(n, str(n)), NOW).status
            for n in range(4)][-1] == Status.E_UNAVAILABLE
    assert len(r) == 3


def test_source_prefixes() -> None:
    assert source_prefix("192.0.2.77") == "192.0.2.0/24"
    assert source_prefix("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert source_prefix("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert source_prefix(None) == source_prefix("garbage") == "unknown"


# -- records that must prove their peer ----------------------------------------------


def test_a_record_of_another_peer_is_not_authorized() -> None:
    """Peer 1 replays peer 2's genuine record: refused, nothing stored."""
    reply = registry().register(peer(1), IP, Register("app", record(2)), NOW)
    assert reply.status == Status.E_NOT_AUTHORIZED


def test_a_forged_signature_is_refused() -> None:
    genuine = bytearray(record(1))
    genuine[-1] ^= 0x01  # the signature is the envelope's last field
    r = registry()
    reply = r.register(peer(1), IP, Register("app", bytes(genuine)), NOW)
    assert reply.status == Status.E_INVALID_SIGNED_PEER_RECORD
    assert "does not verify" in reply.status_text and len(r) == 0


@pytest.mark.parametrize("envelope", [b"", b"garbage", b"\x0a\x05"])
def test_malformed_records_are_refused(envelope: bytes) -> None:
    reply = registry().register(peer(1), IP, Register("app", envelope), NOW)
    assert reply.status == Status.E_INVALID_SIGNED_PEER_RECORD


def test_a_record_without_addresses_or_too_large_is_refused() -> None:
    r = registry()
    empty = seal_peer_record(key(1), PeerRecord(peer(1), 1, ()))
    assert r.register(peer(1), IP, Register("app", empty), NOW).status == \
        Status.E_INVALID_SIGNED_PEER_RECORD
    big = record(1, addrs=tuple(addr(n) for n in range(64)))
    small = registry(max_record_bytes=len(big) - 1)
    reply = small.register(peer(1), IP, Register("app", big), NOW)
    assert reply.status == Status.E_INVALID_SIGNED_PEER_RECORD and "over" in reply.status_text
    assert r.register(peer(1), IP, Register("app", big), NOW).status == Status.OK


@pytest.mark.parametrize("ns", ["", "x" * 256, "bell\x07"])
def test_bad_namespaces_get_their_status(ns: str) -> None:
    r = registry()
    assert r.register(peer(1), IP, reg(1, ns), NOW).status == Status.E_INVALID_NAMESPACE
    if ns:
        assert r.discover(Discover(ns), NOW).status == Status.E_INVALID_NAMESPACE


# -- discovery and cookies --------------------------------------------------------------


def test_pages_with_cookies_then_only_news() -> None:
    r = registry()
    for n in range(5):
        r.register(peer(n), IP, reg(n), NOW + n)
    seen: list[PeerId] = []
    cookie = b""
    sizes = []
    for _ in range(4):
        page = r.discover(Discover("app", 2, cookie), NOW + 10)
        assert page.status == Status.OK and page.cookie
        sizes.append(len(page.registrations))
        seen += peers_in(page)
        cookie = page.cookie
    assert sizes == [2, 2, 1, 0] and seen == [peer(n) for n in range(5)]
    r.register(peer(9), IP, reg(9), NOW + 11)
    r.register(peer(1), IP, reg(1), NOW + 12)  # a refresh is news too
    r.register(peer(8), IP, reg(8, "other"), NOW + 13)
    page = r.discover(Discover("app", None, cookie), NOW + 14)
    assert peers_in(page) == [peer(9), peer(1)]
    assert r.discover(Discover("app", None, page.cookie), NOW + 14).registrations == ()


def test_discover_every_namespace() -> None:
    r = registry()
    r.register(peer(1), IP, reg(1, "a"), NOW)
    r.register(peer(2), IP, reg(2, "b"), NOW)
    page = r.discover(Discover(""), NOW)
    assert [(x.ns, p) for x, p in zip(page.registrations, peers_in(page))] == [
        ("a", peer(1)), ("b", peer(2))]
    assert r.discover(Discover("nobody"), NOW).registrations == ()


def test_limit_is_clamped_to_the_maximum() -> None:
    r = registry(max_discover_limit=3)
    for n in range(5):
        r.register(peer(n), IP, reg(n), NOW)
    assert len(r.discover(Discover("app", 10**9), NOW).registrations) == 3
    assert len(r.discover(Discover("app"), NOW).registrations) == 3


def test_a_page_stays_under_its_byte_budget() -> None:
    one = len(record(1)) + len("app") + 32  # the registry's per-entry estimate
    r = registry(max_record_bytes=300, page_bytes=1324)
    for n in range(40):
        r.register(peer(n), IP, reg(n), NOW)
    cookie, pages = b"", []
    while True:
        page = r.discover(Discover("app", 1000, cookie), NOW)
        pages.append(page)
        cookie = page.cookie
        if not page.registrations:
            break
    assert len(pages[0].registrations) == 1324 // one
    assert all(sum(len(x.signed_peer_record) + 35 for x in p.registrations) <= 1324
               for p in pages)
    found = [p for page in pages for p in peers_in(page)]
    assert len(found) == 40 and set(found) == set(map(peer, range(40)))


@pytest.mark.parametrize("mutate", [
    lambda c: c[:-1] + bytes([c[-1] ^ 1]),  # tampered MAC
    lambda c: c[:1] + (10**6).to_bytes(8, "big") + c[9:],  # moved cursor
    lambda c: c + b"x",
    lambda c: b"",  # handled as "no cookie", see below
])
def test_forged_cookies_are_refused(mutate: object) -> None:
    r = registry()
    r.register(peer(1), IP, reg(1), NOW)
    cookie = r.discover(Discover("app"), NOW).cookie
    forged = mutate(cookie)  # type: ignore[operator]
    page = r.discover(Discover("app", None, forged), NOW)
    if forged:
        assert page.status == Status.E_INVALID_COOKIE and page.registrations == ()
    else:
        assert page.status == Status.OK and len(page.registrations) == 1


def test_a_cookie_is_bound_to_its_namespace_and_server() -> None:
    r = registry()
    r.register(peer(1), IP, reg(1, "a"), NOW)
    cookie = r.discover(Discover("a"), NOW).cookie
    assert r.discover(Discover("b", None, cookie), NOW).status == Status.E_INVALID_COOKIE
    restarted = Registry(RegistryConfig(), secret=b"t" * 32)
    assert restarted.discover(Discover("a", None, cookie), NOW).status == Status.E_INVALID_COOKIE


def test_matches_a_brute_force_model() -> None:
    """Random registers, unregisters and clock steps: paging through every
    namespace always yields exactly the live set of a plain dict model."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    r = registry(min_ttl=10, default_ttl=10, max_per_namespace=6, max_total=25)
    model: dict[tuple[str, PeerId], float] = {}
    now = NOW
    for _ in range(400):
        op = rng.random()
        n, ns = rng.randrange(12), rng.choice("abc")
        if op < 0.5:
            ttl = rng.randrange(10, 60)
            live = {k: v for k, v in model.items() if v > now}
            full = (len(live) >= 25 or sum(1 for k in live if k[0] == ns) >= 6)
            status = r.register(peer(n), IP, reg(n, ns, ttl), now).status
            if (ns, peer(n)) in live or not full:
                assert status == Status.OK, seed
                model[(ns, peer(n))] = now + ttl
            else:
                assert status == Status.E_UNAVAILABLE, seed
        elif op < 0.65:
            r.unregister(peer(n), ns, now)
            model.pop((ns, peer(n)), None)
        elif op < 0.8:
            now += rng.choice([0.5, 3, 11])
        else:
            limit = rng.randrange(1, 5)
            got: list[tuple[str, PeerId]] = []
            cookie = b""
            while True:
                page = r.discover(Discover(ns, limit, cookie), now)
                got += [(x.ns, p) for x, p in zip(page.registrations, peers_in(page))]
                cookie = page.cookie
                if len(page.registrations) < limit:
                    break
            expected = {k for k, v in model.items() if v > now and k[0] == ns}
            assert len(got) == len(set(got)) and set(got) == expected, seed
