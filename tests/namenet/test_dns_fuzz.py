"""Whatever bytes arrive, the DNS front answers or drops, and never raises."""

from __future__ import annotations

import asyncio
import time

from dnslib import DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.naming.dns_front import DnsFront, DnsFrontConfig
from overlay.naming.net_errors import NameNotFound
from overlay.naming.resolver import Resolution
from tests.naming.helpers import key, record

REC = record(key(1), expires=time.time() + 7 * 24 * 3600, ips=(b"\x7f\x00\x00\x01",))


async def _resolve(name: str) -> Resolution:
    if name != "alice.ovl":
        raise NameNotFound(name)
    return Resolution(name, REC, "cache", 0.0, time.time() + 60)


FRONT = DnsFront(DnsFrontConfig(port=0), _resolve)


def _answer(data: bytes, udp: bool) -> bytes | None:
    return asyncio.run(FRONT.answer(data, udp=udp))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_are_dropped_or_answered(data: bytes, udp: bool) -> None:
    reply = _answer(data, udp)
    if reply is not None:
        parsed = DNSRecord.parse(reply)
        assert parsed.header.qr == 1
        assert len(reply) <= (4096 if udp else 65535)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 11), st.integers(0, 255), st.sampled_from(["alice.ovl", "x.ovl", "a.com"]))
def test_mutated_queries_never_break_the_front(position: int, value: int, name: str) -> None:
    query = bytearray(DNSRecord.question(name, "A").pack())
    query[position] = value
    reply = _answer(bytes(query), True)
    if reply is not None:
        assert DNSRecord.parse(reply).header.id == int.from_bytes(query[:2], "big")
