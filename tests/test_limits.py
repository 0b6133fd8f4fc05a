"""The pure limiter: source scopes, counters, token buckets, hit logging."""

from __future__ import annotations

import pytest

from overlay.limits import LimitHits, RateLimiter, ScopedCounter, source_key


def test_source_key_groups_public_prefixes_and_splits_loopback() -> None:
    assert source_key("203.0.113.7") == source_key("203.0.113.200") == "v4:203.0.113.0/24"
    assert source_key("203.0.114.7") != source_key("203.0.113.7")
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:ffff::9")
    assert source_key("2001:db8:2::1") != source_key("2001:db8:1::1")
    # Every loopback address is a source of its own: tests and local
    # attackers bind distinct 127.x.y.z addresses.
    assert source_key("127.0.0.1") != source_key("127.0.66.1")
    assert source_key("127.0.0.1") != source_key("127.0.0.2")
    assert source_key("::ffff:203.0.113.9") == source_key("203.0.113.1")
    assert source_key("not an ip").startswith("other:")


def test_scoped_counter_limits_each_key_and_forgets_released_ones() -> None:
    counter = ScopedCounter(2)
    assert counter.acquire("a") and counter.acquire("a")
    assert not counter.acquire("a")
    assert counter.acquire("b")
    counter.release("a")
    assert counter.acquire("a")
    for _ in range(3):
        counter.release("a")
    counter.release("b")
    assert len(counter) == 0
    with pytest.raises(ValueError):
        ScopedCounter(0)


def test_rate_limiter_refills_with_time_and_bounds_its_memory() -> None:
    limiter = RateLimiter(rate=10.0, burst=5.0, max_keys=3)
    assert all(limiter.allow("x", 0.0) for _ in range(5))
    assert not limiter.allow("x", 0.0)
    assert limiter.allow("y", 0.0)  # another source has its own bucket
    assert not limiter.allow("x", 0.05)  # half a token back
    assert limiter.allow("x", 0.1)
    for i in range(100):
        limiter.allow(f"k{i}", 1.0)
    assert len(limiter) == 3
    # A clock going backwards never mints tokens.
    fresh = RateLimiter(rate=1.0, burst=1.0)
    assert fresh.allow("z", 10.0) and not fresh.allow("z", 5.0) and not fresh.allow("z", 10.5)


def test_hits_are_counted_always_and_logged_once_a_minute_per_cause() -> None:
    hits = LimitHits()
    assert hits.hit("a", 0.0) == 1  # the first hit is reported
    assert hits.hit("a", 1.0) == 0
    assert hits.hit("a", 59.0) == 0
    assert hits.hit("b", 2.0) == 1  # another cause has its own minute
    assert hits.hit("a", 60.5) == 3  # the line summarises the quiet ones
    assert hits.snapshot() == {"a": 4, "b": 1}
    assert hits.total() == 5
