"""Address validation with Retry tokens: the token codec at a fixed ``now``,
and the endpoint sending Retries over its threshold, completing our own
dialer through them, and refusing forged or expired tokens."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicErrorCode, QuicPacketType

from overlay.identity import Ed25519PrivateKey
from overlay.transport import QuicEndpoint, TransportConfig
from overlay.transport.errors import InvalidToken
from overlay.transport.retry import RetryTokens, retry_packet

from .conftest import peer_of
from .rawquic import RawClient, header_of, receive, receive_type, udp_socket

ODCID = bytes.fromhex("0102030405060708")
RCID = bytes.fromhex("a1a2a3a4a5a6a7a8")


# -- the token codec (pure) ------------------------------------------------------


def test_token_round_trip_returns_the_original_cid() -> None:
    tokens = RetryTokens(lifetime=10.0)
    token = tokens.issue("192.0.2.7", 4433, ODCID, RCID, now=100.0)
    assert tokens.validate("192.0.2.7", 4433, RCID, token, now=109.9) == ODCID
    # The kernel may report an IPv4 client as IPv4-mapped IPv6.
    assert tokens.validate("::ffff:192.0.2.7", 4433, RCID, token, now=100.0) == ODCID


@pytest.mark.parametrize("change", ["ip", "port", "cid", "expired", "key", "bitflip", "short"])
def test_token_bound_to_address_cid_time_and_key(change: str) -> None:
    tokens = RetryTokens(lifetime=10.0, key=b"k" * 32)
    token = tokens.issue("2001:db8::1", 4433, ODCID, RCID, now=100.0)
    ip, port, cid, now, checker = "2001:db8::1", 4433, RCID, 105.0, tokens
    if change == "ip":
        ip = "2001:db8::2"
    elif change == "port":
        port = 4434
    elif change == "cid":
        cid = ODCID  # the Initial must go to the Retry's connection ID
    elif change == "expired":
        now = 110.01
    elif change == "key":
        checker = RetryTokens(lifetime=10.0, key=b"j" * 32)
    elif change == "bitflip":
        token = token[:-1] + bytes([token[-1] ^ 1])
    elif change == "short":
        token = token[:20]
    with pytest.raises(InvalidToken):
        checker.validate(ip, port, cid, token, now)


def test_own_tokens_are_recognised_and_foreign_ones_are_not() -> None:
    tokens = RetryTokens(key=b"k" * 32)
    token = tokens.issue("192.0.2.7", 4433, ODCID, RCID, now=100.0)
    assert tokens.recognises(token)
    assert tokens.recognises(token[:-1] + bytes([token[-1] ^ 1]))  # ours, tampered
    assert not RetryTokens(key=b"j" * 32).recognises(token)  # another endpoint's
    assert not tokens.recognises(os.urandom(60))
    assert not tokens.recognises(b"\x6f" + os.urandom(49))  # the format byte alone
    assert not tokens.recognises(b"")


def test_token_codec_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RetryTokens(lifetime=0)
    with pytest.raises(ValueError):
        RetryTokens(key=b"short")
    with pytest.raises(ValueError):
        RetryTokens().issue("192.0.2.1", 1, bytes(21), RCID, now=0.0)
    with pytest.raises(InvalidToken):
        RetryTokens().validate("192.0.2.1", 1, RCID, os.urandom(60), now=0.0)


# -- the endpoint ------------------------------------------------------------------


async def test_dialer_completes_through_retry() -> None:
    async with asyncio.timeout(5):
        key_b = Ed25519PrivateKey.generate()
        config = TransportConfig(retry_threshold=0)  # every new client gets a Retry
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as a:
            conn_a = await a.dial(b.local_address, peer_of(key_b))
            conn_b = await b.accept()
            assert b.limit_hits.counts.get("quic.retry", 0) >= 1
            assert "quic.invalid_token" not in b.limit_hits.counts
            stream = await conn_a.open_stream()
            stream.write(b"through a retry")
            stream.write_eof()
            inbound = await conn_b.accept_stream()
            assert await inbound.readexactly(15) == b"through a retry"


async def test_retry_sent_only_over_threshold_and_client_completes() -> None:
    async with asyncio.timeout(5):
        key_b = Ed25519PrivateKey.generate()
        config = TransportConfig(retry_threshold=2)
        socks = [udp_socket(f"127.0.0.{66 + i}") for i in range(3)]
        try:
            async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                    await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as a:
                stalled = [RawClient(sock, b.local_address) for sock in socks]
                # Two silent clients, each answered by a server Initial: slots taken.
                for client in stalled[:2]:
                    await client.flush()
                    reply = await receive(client.sock)
                    assert header_of(reply).packet_type is QuicPacketType.INITIAL
                assert "quic.retry" not in b.limit_hits.counts
                assert len(b.connections) == 2
                # Over the threshold: a Retry, and no state kept for it.
                await stalled[2].flush()
                retry = await receive(stalled[2].sock)
                assert header_of(retry).packet_type is QuicPacketType.RETRY
                assert b.limit_hits.counts["quic.retry"] == 1
                assert len(b.connections) == 2
                # The raw client answers with its token and is let in.
                stalled[2].feed(retry)
                await stalled[2].flush()
                await receive_type(stalled[2].sock, QuicPacketType.INITIAL)
                assert len(b.connections) == 3
                # Our own dialer goes through a Retry too.
                conn = await a.dial(b.local_address, peer_of(key_b))
                assert conn.remote_peer == peer_of(key_b)
                assert b.limit_hits.counts["quic.retry"] == 2
        finally:
            for sock in socks:
                sock.close()


async def _refused_token(b: QuicEndpoint, client: RawClient, token: bytes) -> int:
    """Hands ``client`` a Retry with ``token`` as if from ``b``; returns the
    transport error code with which ``b`` closes the client's next Initial."""
    first = header_of(client.pending()[0])  # never sent: b must not answer it
    client.feed(retry_packet(first.version or 1, first.source_cid, first.destination_cid,
                             os.urandom(8), token))
    await client.flush()  # the Initial now carries the token
    client.feed(await receive(client.sock))
    event = client.terminated()
    assert event is not None
    return event.error_code


async def test_forged_or_tampered_own_token_is_refused() -> None:
    async with asyncio.timeout(5):
        sock = udp_socket("127.0.0.66")
        try:
            config = TransportConfig(retry_threshold=0)
            async with await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(),
                                                 config) as b:
                ip, port = sock.getsockname()
                # The format byte and key tag of b's tokens, which anyone who
                # got a Retry from b has seen, then random bytes.
                prefix = b._retry_tokens.issue(ip, port, RCID, RCID, now=0.0)[:9]
                client = RawClient(sock, b.local_address)
                code = await _refused_token(b, client, prefix + os.urandom(51))
                assert code == QuicErrorCode.INVALID_TOKEN
                # A genuine token for this client with one bit of its MAC flipped.
                client = RawClient(sock, b.local_address)
                first = header_of(client.pending()[0])
                rcid = os.urandom(8)
                token = b._retry_tokens.issue(ip, port, first.destination_cid, rcid,
                                              now=time.monotonic())
                client.feed(retry_packet(first.version or 1, first.source_cid,
                                         first.destination_cid, rcid,
                                         token[:-1] + bytes([token[-1] ^ 1])))
                await client.flush()
                client.feed(await receive(sock))
                event = client.terminated()
                assert event is not None and event.error_code == QuicErrorCode.INVALID_TOKEN
                assert b.limit_hits.counts["quic.invalid_token"] == 2
                assert b.connections == []
        finally:
            sock.close()


async def test_foreign_token_is_ignored_and_retry_still_applies() -> None:
    """RFC 9000 section 8.1.3: a token b cannot identify as its own (another
    server's NEW_TOKEN token) counts as no token: no INVALID_TOKEN, and over
    the threshold the client is asked for a Retry like any other."""
    async with asyncio.timeout(5):
        sock = udp_socket("127.0.0.66")
        try:
            config = TransportConfig(retry_threshold=0)
            async with await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(),
                                                 config) as b:
                for token in (os.urandom(60), b"\x6f" + os.urandom(49), b"\x00"):
                    client = RawClient(sock, b.local_address, token=token)
                    sent = await client.flush()
                    assert header_of(sent[0]).token == token
                    reply = await receive(sock)
                    assert header_of(reply).packet_type is QuicPacketType.RETRY
                assert "quic.invalid_token" not in b.limit_hits.counts
                assert b.limit_hits.counts["quic.retry"] == 3
                assert b.connections == []
        finally:
            sock.close()


@pytest.mark.parametrize("threshold", [0, 64])
async def test_dialer_with_foreign_token_connects(threshold: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A dialer presenting another server's token gets through, straight
    away below the Retry threshold and through a Retry over it."""
    async with asyncio.timeout(5):
        key_b = Ed25519PrivateKey.generate()
        config = TransportConfig(retry_threshold=threshold)
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as a:
            make = a._quic_configuration

            def with_token(*, is_client: bool) -> QuicConfiguration:
                configuration = make(is_client=is_client)
                configuration.token = os.urandom(90)
                return configuration

            monkeypatch.setattr(a, "_quic_configuration", with_token)
            conn_a = await a.dial(b.local_address, peer_of(key_b))
            conn_b = await b.accept()
            assert "quic.invalid_token" not in b.limit_hits.counts
            assert ("quic.retry" in b.limit_hits.counts) == (threshold == 0)
            stream = await conn_a.open_stream()
            stream.write(b"foreign token")
            stream.write_eof()
            inbound = await conn_b.accept_stream()
            assert await inbound.readexactly(13) == b"foreign token"


async def test_expired_or_misdirected_token_is_refused() -> None:
    async with asyncio.timeout(5):
        sock = udp_socket("127.0.0.66")
        other = udp_socket("127.0.0.67")
        try:
            config = TransportConfig(retry_threshold=0)
            async with await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate(),
                                                 config) as b:
                ip, port = sock.getsockname()
                # Issued by b itself, for this very client, but long ago.
                client = RawClient(sock, b.local_address)
                first = header_of(client.pending()[0])
                rcid = os.urandom(8)
                stale = b._retry_tokens.issue(ip, port, first.destination_cid, rcid,
                                              now=time.monotonic() - 60)
                client.feed(retry_packet(first.version or 1, first.source_cid,
                                         first.destination_cid, rcid, stale))
                await client.flush()
                client.feed(await receive(sock))
                event = client.terminated()
                assert event is not None and event.error_code == QuicErrorCode.INVALID_TOKEN
                # A fresh token, but for another client's address.
                victim = RawClient(other, b.local_address)
                first = header_of(victim.pending()[0])
                stolen = b._retry_tokens.issue(ip, port, first.destination_cid, rcid,
                                               now=time.monotonic())
                victim.feed(retry_packet(first.version or 1, first.source_cid,
                                         first.destination_cid, rcid, stolen))
                await victim.flush()
                victim.feed(await receive(other))
                event = victim.terminated()
                assert event is not None and event.error_code == QuicErrorCode.INVALID_TOKEN
                assert b.limit_hits.counts["quic.invalid_token"] == 2
                assert b.connections == []
        finally:
            sock.close()
            other.close()


async def test_late_copy_of_first_initial_makes_no_second_connection() -> None:
    async with asyncio.timeout(5):
        key_b = Ed25519PrivateKey.generate()
        config = TransportConfig(retry_threshold=2)
        stalled_socks = [udp_socket("127.0.0.66") for _ in range(2)]
        sock = udp_socket("127.0.0.67")
        try:
            async with await QuicEndpoint.create("127.0.0.1", 0, key_b, config) as b, \
                    await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as a:
                for stalled_sock in stalled_socks:  # they hold the slots below the threshold
                    await RawClient(stalled_sock, b.local_address).flush()
                    await receive(stalled_sock)
                client = RawClient(sock, b.local_address)
                first = (await client.flush())[0]
                retry = await receive(sock)
                assert header_of(retry).packet_type is QuicPacketType.RETRY
                client.feed(retry)
                await client.flush()
                await receive_type(sock, QuicPacketType.INITIAL)
                assert len(b.connections) == 3
                # The stalled clients' sockets close: ICMP ends their handshakes.
                stalled = [c for c in b.connections if c.remote_address[0] == "127.0.0.66"]
                for stalled_sock in stalled_socks:
                    stalled_sock.close()
                for conn in stalled:
                    await conn.wait_closed()
                # Below the threshold again, the first Initial arrives late.
                loop = asyncio.get_running_loop()
                await loop.sock_sendto(sock, first, b.local_address)
                await a.dial(b.local_address, peer_of(key_b))  # handled after it
                clients = [c for c in b.connections
                           if not c.is_initiator and c.remote_address[0] == "127.0.0.67"]
                assert len(clients) == 1
                assert "quic.retry" in b.limit_hits.counts
        finally:
            for stalled_sock in stalled_socks:
                stalled_sock.close()
            sock.close()
