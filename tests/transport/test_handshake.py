"""The libp2p TLS handshake over real loopback sockets."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from overlay.errors import ConnectionClosed, DialError, HandshakeError, PeerIdMismatch
from overlay.identity import EcdsaPrivateKey, Ed25519PrivateKey, Secp256k1PrivateKey
from overlay.transport import CertificateError, QuicEndpoint, TransportConfig, generate_credentials
from overlay.transport.tls import SignedKey, encode_signed_key

from .conftest import HOSTS, make_pair, peer_of

NOW = datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize("host", HOSTS)
async def test_handshake_both_directions_prove_peer_ids(host: str) -> None:
    async with asyncio.timeout(5):
        p = await make_pair(host)
        try:
            assert p.conn_a.remote_peer == peer_of(p.key_b)
            assert p.conn_b.remote_peer == peer_of(p.key_a)
            assert p.conn_a.remote_public_key == p.key_b.public_key()
            assert p.conn_a.is_initiator and not p.conn_b.is_initiator
            assert p.conn_a.remote_address == p.b.local_address
            assert p.conn_b.remote_address == p.a.local_address
            # The other direction, from the listener's own socket.
            back = await p.b.dial(p.a.local_address, peer_of(p.key_a))
            inbound = await p.a.accept()
            assert back.remote_peer == peer_of(p.key_a)
            assert inbound.remote_peer == peer_of(p.key_b)
        finally:
            await p.a.aclose()
            await p.b.aclose()


@pytest.mark.parametrize(
    "make_key", [Secp256k1PrivateKey.generate, EcdsaPrivateKey.generate],
    ids=["secp256k1", "ecdsa"],
)
async def test_other_host_key_types(make_key: object) -> None:
    async with asyncio.timeout(5):
        key_a, key_b = make_key(), Ed25519PrivateKey.generate()  # type: ignore[operator]
        async with await QuicEndpoint.create("127.0.0.1", 0, key_a) as a, \
                await QuicEndpoint.create("127.0.0.1", 0, key_b) as b:
            conn = await a.dial(b.local_address, peer_of(key_b))
            inbound = await b.accept()
            assert inbound.remote_peer == peer_of(key_a)
            assert conn.remote_peer == peer_of(key_b)


async def test_dial_without_expected_peer_learns_it() -> None:
    async with asyncio.timeout(5):
        key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_a) as a, \
                await QuicEndpoint.create("127.0.0.1", 0, key_b) as b:
            conn = await a.dial(b.local_address)
            assert conn.remote_peer == peer_of(key_b)


async def test_peer_id_mismatch() -> None:
    async with asyncio.timeout(5):
        key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        wanted = peer_of(Ed25519PrivateKey.generate())
        async with await QuicEndpoint.create("127.0.0.1", 0, key_a) as a, \
                await QuicEndpoint.create("127.0.0.1", 0, key_b) as b:
            with pytest.raises(PeerIdMismatch) as info:
                await a.dial(b.local_address, wanted)
            assert info.value.expected == str(wanted)
            assert info.value.actual == str(peer_of(key_b))
            # The listener never hands out the aborted connection, and the
            # dialer still connects when asking for the right peer.
            conn = await a.dial(b.local_address, peer_of(key_b))
            inbound = await b.accept()
            assert inbound.remote_peer == peer_of(key_a)
            assert conn.remote_peer == peer_of(key_b)


def _bad_credentials(kind: str) -> object:
    key = Ed25519PrivateKey.generate()
    if kind == "no-extension":
        return generate_credentials(key, NOW, include_extension=False)
    if kind == "wrong-signature":
        value = encode_signed_key(SignedKey(key.public_key().to_protobuf(), key.sign(b"other")))
        return generate_credentials(key, NOW, extension_value=value)
    assert kind == "invalid-signed-key"
    return generate_credentials(key, NOW, extension_value=b"\x30\x03\x04\x01\x00")


@pytest.mark.parametrize("kind", ["no-extension", "wrong-signature", "invalid-signed-key"])
async def test_bad_client_certificate_rejected_server_keeps_serving(kind: str) -> None:
    async with asyncio.timeout(5):
        key_bad, key_b, key_good = (Ed25519PrivateKey.generate() for _ in range(3))
        confirm = TransportConfig(confirm_handshake=True)
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b) as b, \
                await QuicEndpoint.create(
                    "127.0.0.1", 0, key_bad, confirm,
                    credentials=_bad_credentials(kind),  # type: ignore[arg-type]
                ) as bad, \
                await QuicEndpoint.create("127.0.0.1", 0, key_good) as good:
            # 0x12a: CRYPTO_ERROR + bad_certificate, sent by the listener.
            with pytest.raises(HandshakeError, match="0x12a"):
                await bad.dial(b.local_address, peer_of(key_b))
            conn = await good.dial(b.local_address, peer_of(key_b))
            inbound = await b.accept()
            assert inbound.remote_peer == peer_of(key_good)
            assert conn.remote_peer == peer_of(key_b)
            assert len(b.connections) == 1


async def test_rejected_client_without_confirmation_loses_connection() -> None:
    async with asyncio.timeout(5):
        key_bad, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b) as b, \
                await QuicEndpoint.create(
                    "127.0.0.1", 0, key_bad,
                    credentials=_bad_credentials("no-extension"),  # type: ignore[arg-type]
                ) as bad:
            # The client's side of the handshake completes before the
            # listener checks its certificate; the listener then closes.
            try:
                conn = await bad.dial(b.local_address, peer_of(key_b))
            except HandshakeError as exc:
                assert "0x12a" in str(exc)
            else:
                stream = await conn.open_stream()
                stream.write(b"never processed")
                with pytest.raises(ConnectionClosed, match="0x12a"):
                    await stream.read()
            assert b.connections == []


@pytest.mark.parametrize("kind", ["no-extension", "wrong-signature", "invalid-signed-key"])
async def test_bad_server_certificate_rejected_by_client(kind: str) -> None:
    async with asyncio.timeout(5):
        key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_a) as a, \
                await QuicEndpoint.create(
                    "127.0.0.1", 0, key_b, credentials=_bad_credentials(kind)  # type: ignore[arg-type]
                ) as b:
            with pytest.raises(CertificateError):
                await a.dial(b.local_address)
            assert a.connections == []


async def test_client_without_certificate_gets_certificate_required() -> None:
    async with asyncio.timeout(5):
        key_b = Ed25519PrivateKey.generate()
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b) as b:
            host, port = b.local_address
            config = QuicConfiguration(alpn_protocols=["libp2p"], verify_mode=ssl.CERT_NONE)
            async with connect(host, port, configuration=config) as client:
                await client.wait_closed()
                close = client._quic._close_event
                assert close is not None
                # CRYPTO_ERROR (0x100) + certificate_required (116)
                assert close.error_code == 0x100 + 116
            assert b.connections == []


async def test_raw_aioquic_client_with_libp2p_certificate_is_accepted() -> None:
    async with asyncio.timeout(5):
        key_b, key_c = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        creds = generate_credentials(key_c, NOW)
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b) as b:
            host, port = b.local_address
            config = QuicConfiguration(alpn_protocols=["libp2p"], verify_mode=ssl.CERT_NONE,
                                       certificate=creds.certificate,
                                       private_key=creds.private_key)
            async with connect(host, port, configuration=config) as client:
                inbound = await b.accept()
                assert inbound.remote_peer == peer_of(key_c)
                client.close()


async def test_handshake_timeout_to_silent_peer() -> None:
    async with asyncio.timeout(5):
        key = Ed25519PrivateKey.generate()
        config = TransportConfig(handshake_timeout=0.3)
        async with await QuicEndpoint.create("127.0.0.1", 0, key, config) as a, \
                await QuicEndpoint.create("127.0.0.1", 0, Ed25519PrivateKey.generate()) as silent:
            silent.set_datagram_hook(lambda data, addr: True)
            # Swallow everything by pretending nothing is QUIC.
            silent._datagram_received = lambda data, addr: None  # type: ignore[method-assign]
            with pytest.raises(DialError, match="no QUIC response within 0.3 s"):
                await a.dial(silent.local_address)
            assert a.connections == []


async def test_wrong_alpn_is_refused() -> None:
    async with asyncio.timeout(5):
        key_b, key_c = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        creds = generate_credentials(key_c, NOW)
        async with await QuicEndpoint.create("127.0.0.1", 0, key_b) as b:
            host, port = b.local_address
            config = QuicConfiguration(alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE,
                                       certificate=creds.certificate,
                                       private_key=creds.private_key)
            with pytest.raises(ConnectionError):
                async with connect(host, port, configuration=config):
                    pass
            assert b.connections == []
