"""Exits, pure parts: the /ovl/exit/1.0.0 header codec, the destination
rule, the [exit] table and per-client accounting."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.apps.exit_client import check_exit_choice
from overlay.apps.exit_policy import (
    ClientBook,
    ExitConfig,
    TokenBucket,
    destination_refusal,
    parse_exit_table,
)
from overlay.apps.exit_proto import (
    MAX_HEADER,
    ExitHeaderError,
    ExitRequest,
    decode_request,
    encode_request,
    exit_provider_key,
    status_text,
)

_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
_NAMES = st.lists(_LABEL, min_size=1, max_size=6).map(".".join)
_HOSTS = st.one_of(_NAMES, st.ip_addresses().map(str))
_PORTS = st.integers(1, 65535)


@given(_HOSTS, _PORTS, st.binary(max_size=40))
def test_header_roundtrip_with_trailing_bytes(host: str, port: int, tail: bytes) -> None:
    raw = encode_request(host, port)
    assert len(raw) <= MAX_HEADER
    decoded = decode_request(raw + tail)
    assert decoded is not None
    request, used = decoded
    assert used == len(raw)
    assert request == ExitRequest(host.lower(), port)
    # Every strict prefix is incomplete, never an error or a wrong answer.
    for cut in range(len(raw)):
        assert decode_request(raw[:cut]) is None


@given(st.binary(max_size=300))
def test_decoder_never_fails_otherwise(data: bytes) -> None:
    try:
        decoded = decode_request(data)
    except ExitHeaderError:
        return
    if decoded is None:
        assert len(data) < MAX_HEADER
        return
    request, used = decoded
    assert 3 < used <= min(len(data), MAX_HEADER)
    assert 0 < request.port < 65536
    again = encode_request(request.host, request.port)  # what it decoded is valid
    assert decode_request(again) == (request, len(again))


def test_decoder_refusals() -> None:
    with pytest.raises(ExitHeaderError, match="port 0"):
        decode_request(b"\x00\x00\x03abc")
    with pytest.raises(ExitHeaderError, match="length"):
        decode_request(b"\x00\x50\x00")
    with pytest.raises(ExitHeaderError, match="bad host"):
        decode_request(b"\x00\x50\x03a b")
    with pytest.raises(ExitHeaderError, match="bad host"):
        decode_request(b"\x00\x50\x03::g")
    assert decode_request(b"\x01\xbb\x0bExample.COM") == (ExitRequest("example.com", 443), 14)
    with pytest.raises(ValueError):
        encode_request("example.com", 0)
    assert "allowlist" in status_text(1) and "unknown status 99" in status_text(99)


def test_provider_key_is_a_multihash_per_zone() -> None:
    key = exit_provider_key("ovl")
    assert key[:2] == b"\x12\x20" and len(key) == 34
    assert key != exit_provider_key("test")


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("192.168.1.1", "private"), ("172.16.0.1", "private"), ("fd00::1", "private"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "non-global"), ("192.0.2.1", "private"), ("198.51.100.7", "private"),
    ("240.0.0.1", "address"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a00:1", "private"),
    ("2002:c0a8:101::1", "private"),
])
def test_non_global_destinations_are_refused(address: str, why: str) -> None:
    refusal = destination_refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize("address", ["1.1.1.1", "93.184.216.34", "2606:4700::1111",
                                     "64:ff9b::101:101", "::ffff:1.1.1.1"])
def test_global_destinations_pass(address: str) -> None:
    assert destination_refusal(ipaddress.ip_address(address)) is None


def test_lab_networks_exempt_only_what_they_list() -> None:
    lab = ExitConfig(unsafe_lab_destinations=("127.0.0.1/32",)).lab_networks
    assert destination_refusal(ipaddress.ip_address("127.0.0.1"), lab) is None
    assert destination_refusal(ipaddress.ip_address("127.0.0.2"), lab) == "loopback address"
    wide = ExitConfig(unsafe_lab_destinations=("0.0.0.0/0",)).lab_networks
    assert destination_refusal(ipaddress.ip_address("0.0.0.0"), wide) is not None
    assert destination_refusal(ipaddress.ip_address("224.0.0.1"), wide) is not None


@given(st.ip_addresses())
def test_whatever_passes_is_global_unicast(address: ipaddress.IPv4Address
                                           | ipaddress.IPv6Address) -> None:
    if destination_refusal(address) is None:
        # A mapped or NAT64 address is judged by the IPv4 address it carries.
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            elif address in ipaddress.IPv6Network("64:ff9b::/96"):
                address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        assert address.is_global and not address.is_multicast
        assert not (address.is_private or address.is_loopback or address.is_link_local)


def test_exit_table() -> None:
    config = parse_exit_table({})
    assert (config.enabled, config.ports, config.allow) == (False, (80, 443), ())
    config = parse_exit_table({"enabled": True, "ports": [443, 8080, 443], "allow": ["*"],
                               "max_bytes": 1000})
    assert config.ports == (443, 8080) and config.open_to_anyone and config.max_bytes == 1000
    cases: list[tuple[dict[str, Any], str]] = [({"ports": [0]}, "port"), ({"ports": []}, "1 to"),
                       ({"allow": ["not a peer"]}, "neither"), ({"colour": 1}, "unknown key"),
                       ({"max_connections": 0}, ">= 1"), ({"rate": -1}, ">= 0"),
                       ({"unsafe_lab_destinations": ["lan"]}, "network"),
                       ({"allow": "*"}, "list"), ({"enabled": "yes"}, "true or false")]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            parse_exit_table(bad)


def test_exit_choice() -> None:
    assert check_exit_choice("auto") == "auto"
    assert check_exit_choice("Exit.OVL") == "exit.ovl"
    with pytest.raises(ValueError, match="auto"):
        check_exit_choice("nowhere")


def test_client_book_limits() -> None:
    book = ClientBook(ExitConfig(max_connections=2, max_bytes=100, max_total=3))
    assert book.admit("a", 0.0) is None and book.admit("a", 0.0) is None
    assert book.admit("a", 0.0) == "exit.connections_per_client"
    assert book.admit("b", 0.0) is None
    assert book.admit("c", 0.0) == "exit.connections_total"
    book.release("a")
    assert book.charge("a", 60, 0.0) == 0.0
    assert book.charge("a", 60, 0.0) is None  # 120 > 100
    assert book.admit("a", 0.0) == "exit.bytes_per_client"
    assert book.snapshot()["a"] == {"open": 1, "connections": 2, "bytes": 120}


def test_token_bucket() -> None:
    bucket = TokenBucket(1000, now=0.0)
    assert bucket.take(1000, 0.0) == 0.0  # one second of burst
    assert bucket.take(500, 0.0) == pytest.approx(0.5)
    assert bucket.take(500, 1.0) == pytest.approx(0.0)  # refilled 1000, owed 500
    assert TokenBucket(0, 0.0).take(10**9, 0.0) == 0.0
