"""The pure parsers: SOCKS5, HTTP proxy heads, the service header, the
services table and the policy decisions; hypothesis fuzzes each parser
(any bytes, any split: a typed error or a message, never anything else)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.apps import http_proxy, socks5
from overlay.apps.config import exposure_table, parse_services
from overlay.apps.errors import (
    HeadTooLarge,
    HttpRequestError,
    ProxyProtocolError,
    Reason,
    ServiceHeaderError,
    SocksError,
    TargetError,
)
from overlay.apps.policy import http_status_for, is_allowed, service_for_port, socks_reply_for
from overlay.apps.service_proto import Status, decode_header, encode_header, status_reason
from overlay.errors import ConfigError
from overlay.naming.record import Service

PEER = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"

# -- SOCKS5 -----------------------------------------------------------------------------


def test_greeting_waits_for_all_methods_then_parses() -> None:
    assert socks5.parse_greeting(b"") is None
    assert socks5.parse_greeting(b"\x05") is None
    assert socks5.parse_greeting(b"\x05\x02\x00") is None
    greeting, used = socks5.parse_greeting(b"\x05\x02\x00\x02rest") or (None, 0)
    assert greeting is not None and greeting.methods == (0, 2) and used == 4
    assert greeting.accepts_no_auth


@pytest.mark.parametrize("data", [b"\x04\x01\x00", b"\x05\x00"])
def test_greeting_refuses_socks4_and_no_methods(data: bytes) -> None:
    with pytest.raises(SocksError):
        socks5.parse_greeting(data)


def test_connect_requests_for_each_address_type() -> None:
    v4 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
    v6 = b"\x05\x01\x00\x04" + bytes(15) + b"\x01" + b"\x1f\x90"
    name = b"\x05\x01\x00\x03\x09alice.ovl\x00\x50"
    assert socks5.parse_request(v4) == (socks5.ConnectRequest("127.0.0.1", 80, False), 10)
    assert socks5.parse_request(v6) == (socks5.ConnectRequest("::1", 8080, False), 22)
    assert socks5.parse_request(name + b"GET") == (
        socks5.ConnectRequest("alice.ovl", 80, True), len(name))
    for whole in (v4, v6, name):
        for cut in range(len(whole)):
            assert socks5.parse_request(whole[:cut]) is None


@pytest.mark.parametrize(("data", "reply"), [
    (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", socks5.Reply.COMMAND_NOT_SUPPORTED),  # BIND
    (b"\x05\x01\x00\x07\x00\x00", socks5.Reply.ADDRESS_TYPE_NOT_SUPPORTED),
    (b"\x05\x01\x00\x03\x00\x00\x50", socks5.Reply.HOST_UNREACHABLE),  # empty name
    (b"\x05\x01\x00\x03\x02a\x00\x00\x50", socks5.Reply.HOST_UNREACHABLE),  # NUL in name
    (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", socks5.Reply.HOST_UNREACHABLE),  # port 0
])
def test_bad_requests_carry_the_reply_to_send(data: bytes, reply: socks5.Reply) -> None:
    with pytest.raises(SocksError) as info:
        socks5.parse_request(data)
    assert info.value.reply == reply


def test_replies_encode_the_bound_address() -> None:
    assert socks5.encode_reply(socks5.Reply.SUCCEEDED) == b"\x05\x00\x00\x01" + bytes(6)
    assert socks5.encode_reply(socks5.Reply.HOST_UNREACHABLE, ("::1", 1080)) == (
        b"\x05\x04\x00\x04" + bytes(15) + b"\x01\x04\x38")
    assert socks5.encode_method_choice(socks5.NO_AUTH) == b"\x05\x00"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_socks_parsers_fuzz(data: bytes) -> None:
    for parse in (socks5.parse_greeting, socks5.parse_request):
        try:
            result = parse(data)
        except SocksError:
            continue
        if result is not None:
            assert 0 < result[1] <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
               max_size=255), st.integers(1, 65535))
def test_socks_domain_requests_round_trip(host: str, port: int) -> None:
    raw = host.encode()
    data = b"\x05\x01\x00\x03" + bytes((len(raw),)) + raw + port.to_bytes(2, "big")
    assert socks5.parse_request(data) == (socks5.ConnectRequest(host, port, True), len(data))


# -- HTTP -------------------------------------------------------------------------------


def test_connect_head() -> None:
    head = b"CONNECT bob.ovl:443 HTTP/1.1\r\nHost: bob.ovl:443\r\n\r\nTLS"
    request, used = http_proxy.parse_head(head) or (None, 0)
    assert request is not None and request.connect == http_proxy.Target("bob.ovl", 443)
    assert head[used:] == b"TLS"
    assert http_proxy.parse_head(head[:20]) is None


def test_absolute_form_is_rewritten_for_the_origin() -> None:
    head = (b"GET http://Bob.OVL/a/b?c=1 HTTP/1.1\r\nHost: bob.ovl\r\n"
            b"Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n")
    request, _ = http_proxy.parse_head(head) or (None, 0)
    assert request is not None
    assert request.url == http_proxy.Target("bob.ovl", 80) and request.path == "/a/b?c=1"
    assert http_proxy.origin_head(request) == (
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: bob.ovl\r\nAccept: */*\r\nConnection: close\r\n\r\n")


def test_a_missing_host_header_is_added_with_its_port() -> None:
    request, _ = http_proxy.parse_head(b"GET http://[::1]:8080 HTTP/1.0\r\n\r\n") or (None, 0)
    assert request is not None and request.url == http_proxy.Target("::1", 8080)
    assert b"Host: [::1]:8080\r\n" in http_proxy.origin_head(request)


@pytest.mark.parametrize("head", [
    b"GET\r\n\r\n",
    b"GET https://bob.ovl/ HTTP/1.1\r\n\r\n",
    b"GET http://user@bob.ovl/ HTTP/1.1\r\n\r\n",
    b"GET http://bob.ovl:0/ HTTP/1.1\r\n\r\n",
    b"GET http://bob.ovl:99999/ HTTP/1.1\r\n\r\n",
    b"CONNECT bob.ovl HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"G(T / HTTP/1.1\r\n\r\n",
])
def test_malformed_heads_are_typed_errors(head: bytes) -> None:
    with pytest.raises(HttpRequestError):
        http_proxy.parse_head(head)


def test_head_size_and_header_count_limits() -> None:
    assert http_proxy.parse_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 100, limit=200) is None
    with pytest.raises(HeadTooLarge):
        http_proxy.parse_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 300, limit=200)
    many = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (http_proxy.MAX_HEADERS + 1) + b"\r\n"
    with pytest.raises(HeadTooLarge):
        http_proxy.parse_head(many)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_http_parser_fuzz(data: bytes) -> None:
    try:
        result = http_proxy.parse_head(data, limit=512)
    except HttpRequestError as exc:
        assert 400 <= exc.status < 600
        return
    if result is not None:
        request, used = result
        assert data[used - 4:used] == b"\r\n\r\n"
        if request.url is not None:
            assert http_proxy.origin_head(request).endswith(b"Connection: close\r\n\r\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"GET ", b"http://", b"bob.ovl", b":80", b"/", b" HTTP/1.1",
                                 b"\r\n", b"Host: x", b"CONNECT ", b"[::1]", b":", b"\r\n\r\n"]),
                max_size=12))
def test_http_parser_fuzz_structured(parts: list[bytes]) -> None:
    data = b"".join(parts)
    try:
        http_proxy.parse_head(data)
    except ProxyProtocolError:
        pass


def test_error_pages_and_pac() -> None:
    page = http_proxy.error_response(502, "unknown_name", "no such name: <x>.ovl")
    head, _, body = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"X-Overlay-Error: unknown_name" in head
    assert b"&lt;x&gt;.ovl" in body and f"Content-Length: {len(body)}".encode() in head
    pac = http_proxy.pac_file("127.0.0.1", 1080, "ovl")
    assert 'dnsDomainIs(host, ".ovl")' in pac and "SOCKS5 127.0.0.1:1080" in pac
    assert pac.count("return") == 2 and 'return "DIRECT"' in pac


# -- the service header, the table, the policy -------------------------------------------


def test_service_header_round_trip_and_limits() -> None:
    assert decode_header(encode_header("http") + b"data") == ("http", 5)
    assert decode_header(b"") is None and decode_header(b"\x04ht") is None
    for bad in (b"\x00", b"\x40" + b"a" * 64, b"\x02A!", b"\x80\x01"):
        with pytest.raises(ServiceHeaderError):
            decode_header(bad)
    with pytest.raises(ValueError):
        encode_header("no:colons")
    assert status_reason(Status.REFUSED) is Reason.REFUSED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_service_header_fuzz(data: bytes) -> None:
    try:
        result = decode_header(data)
    except ServiceHeaderError:
        return
    if result is not None:
        name, used = result
        assert encode_header(name) == data[:used]


def test_services_table() -> None:
    table = {"http": {"port": 8080}, "ssh": {"port": 22, "host": "::1",
                                             "allow": ["Bob.OVL", PEER]}}
    parsed = parse_services(table)
    assert parsed["ssh"].allow == ("bob.ovl", PEER) and parsed["ssh"].host == "::1"
    assert parse_services(exposure_table(parsed)) == parsed
    for bad in ({"http": {"port": 0}}, {"http": {"port": 80, "colour": "red"}},
                {"Bad!": {"port": 80}}, {"http": {"port": 80, "host": "localhost"}},
                {"http": {"port": 80, "allow": ["not a peer"]}}, {"http": 80}):
        with pytest.raises(ConfigError):
            parse_services(bad)


def test_ports_choose_services() -> None:
    services = (Service("http", 8080), Service("ssh", 22), Service("web", 9000, "other.ovl"))
    assert service_for_port("bob.ovl", 80, services) == "http"
    assert service_for_port("bob.ovl", 22, services) == "ssh"
    with pytest.raises(TargetError) as info:
        service_for_port("bob.ovl", 9000, services)  # points elsewhere
    assert info.value.reason is Reason.NOT_EXPOSED and "http:8080" in str(info.value)


def test_allowlists_and_error_mappings() -> None:
    assert is_allowed((), PEER, ())
    assert is_allowed((PEER,), PEER, ())
    assert is_allowed(("bob.ovl",), PEER, (PEER,))
    assert not is_allowed(("bob.ovl",), PEER, ())
    for reason in Reason:
        assert socks_reply_for(reason) != socks5.Reply.SUCCEEDED
        assert 400 <= http_status_for(reason) < 600


def test_direct_addresses_are_dialed_before_relayed_ones() -> None:
    from multiaddr import Multiaddr

    from overlay.apps.connector import _relayed

    direct = Multiaddr("/ip4/192.0.2.1/udp/4001/quic-v1").to_bytes()
    relayed = Multiaddr(f"/ip4/192.0.2.2/udp/4001/quic-v1/p2p/{PEER}/p2p-circuit").to_bytes()
    assert sorted([relayed, b"junk", direct], key=_relayed)[0] == direct
