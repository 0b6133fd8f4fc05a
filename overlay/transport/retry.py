"""QUIC address validation with Retry tokens (RFC 9000 section 8.1), pure.

When inbound handshakes pile up, the endpoint answers a client's first
Initial by a Retry packet instead of creating a connection.  The Retry
carries a token only this endpoint can make: an HMAC-SHA256, under a key
drawn at random per endpoint, over the client's IP address and port, the
Destination Connection ID of its first Initial (the "original" one, which
the server must echo in its transport parameters), the Source Connection ID
we chose for the Retry (the client sends to it next, RFC 9000 section
17.2.5.2) and an expiry time.  A client that spoofs its source address
never sees the token, so it can no longer make us hold handshake state.
Nothing is stored per token: validation recomputes the MAC.

Token layout (51 to 71 bytes)::

    0x6f | key tag (8) | expiry (8 bytes, ms of the endpoint's monotonic clock)
         | length of the original DCID (1) | original DCID | MAC (32)

A client may also present a token it got from another server (a NEW_TOKEN
token: quinn, for one, keeps them and offers them to the next server).
RFC 9000 section 8.1.3 asks a server to treat a token it cannot use as if
the Initial had none, and to refuse with INVALID_TOKEN only a token it can
identify as its own Retry token that then fails.  The format byte and the
key tag (the first bytes of an HMAC of a fixed label under this endpoint's
key) make ours recognisable: a foreign token matches them by chance with
probability 2**-72.  ``recognises`` says which case a token is.

The packets themselves are built with aioquic's public pieces: the Retry by
``encode_quic_retry``, and a server Initial holding only CONNECTION_CLOSE
(INVALID_TOKEN, CONNECTION_REFUSED) by ``QuicPacketBuilder`` with Initial
keys from ``CryptoPair``.

Nothing here reads a clock or does I/O; callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Final

from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import TRANSPORT_CLOSE_FRAME_CAPACITY
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from overlay.transport.errors import InvalidToken

__all__ = [
    "TOKEN_LIFETIME",
    "RetryTokens",
    "retry_packet",
    "close_initial",
]

TOKEN_LIFETIME: Final = 10.0
"""Default seconds a Retry token stays valid: a client sends it back within
one round trip, so this only has to cover slow paths and retransmissions."""

_FORMAT: Final = 0x6F
_TAG_SIZE: Final = 8
_HEAD: Final = 1 + _TAG_SIZE + 8 + 1  # format, key tag, expiry, DCID length
_MAC_SIZE: Final = 32
_MAX_CID: Final = 20  # RFC 9000 section 17.2
_KEY_SIZE: Final = 32


def _address(ip: str, port: int) -> bytes:
    """The client's address as bytes; an IPv4-mapped IPv6 address is the
    IPv4 address it maps (the kernel may report either)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed + port.to_bytes(2, "big")


class RetryTokens:
    """Makes and checks Retry tokens under one random key."""

    __slots__ = ("lifetime", "_key", "_prefix")

    def __init__(self, lifetime: float = TOKEN_LIFETIME, key: bytes | None = None) -> None:
        if not lifetime > 0:
            raise ValueError("lifetime must be positive")
        if key is not None and len(key) < 16:
            raise ValueError("key must be at least 16 bytes")
        self.lifetime = lifetime
        self._key = key if key is not None else secrets.token_bytes(_KEY_SIZE)
        tag = hmac.new(self._key, b"overlay retry token key tag", hashlib.sha256).digest()
        self._prefix = bytes([_FORMAT]) + tag[:_TAG_SIZE]

    def _mac(
        self, ip: str, port: int, original_cid: bytes, retry_cid: bytes, expiry: bytes
    ) -> bytes:
        message = b"".join((
            expiry,
            _address(ip, port),
            bytes([len(original_cid)]), original_cid,
            bytes([len(retry_cid)]), retry_cid,
        ))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def issue(
        self, ip: str, port: int, original_cid: bytes, retry_cid: bytes, now: float
    ) -> bytes:
        """A token for the client at ``ip:port`` whose first Initial went to
        ``original_cid``, answered by a Retry from ``retry_cid``."""
        if len(original_cid) > _MAX_CID or len(retry_cid) > _MAX_CID:
            raise ValueError("connection IDs are at most 20 bytes")
        expiry = max(0, int((now + self.lifetime) * 1000)).to_bytes(8, "big")
        mac = self._mac(ip, port, original_cid, retry_cid, expiry)
        return self._prefix + expiry + bytes([len(original_cid)]) + original_cid + mac

    def recognises(self, token: bytes) -> bool:
        """Whether ``token`` claims to be a Retry token of this endpoint (its
        format byte and key tag); anything else came from another server
        and is ignored, not refused."""
        return token.startswith(self._prefix)

    def validate(self, ip: str, port: int, destination_cid: bytes, token: bytes, now: float) -> bytes:
        """The original Destination Connection ID that ``token`` vouches
        for, if it was issued by us to ``ip:port`` for a Retry from
        ``destination_cid`` (where the client's Initial now goes) and has
        not expired; raises ``InvalidToken``."""
        if len(token) < _HEAD or not self.recognises(token):
            raise InvalidToken("not a Retry token of this endpoint")
        expiry = token[_HEAD - 9 : _HEAD - 1]
        length = token[_HEAD - 1]
        if length > _MAX_CID or len(token) != _HEAD + length + _MAC_SIZE:
            raise InvalidToken("malformed Retry token")
        original_cid = token[_HEAD : _HEAD + length]
        try:
            expected = self._mac(ip, port, original_cid, destination_cid, expiry)
        except ValueError:
            raise InvalidToken("token for an address that is not an IP") from None
        if not hmac.compare_digest(expected, token[_HEAD + length :]):
            raise InvalidToken("Retry token does not match this client or connection")
        if int.from_bytes(expiry, "big") < now * 1000:
            raise InvalidToken("Retry token has expired")
        return original_cid


def retry_packet(
    version: int, client_cid: bytes, original_cid: bytes, retry_cid: bytes, token: bytes
) -> bytes:
    """A Retry packet to the client whose Initial came from ``client_cid``
    and went to ``original_cid``; the client sends to ``retry_cid`` next,
    with ``token``."""
    return encode_quic_retry(
        version=version,
        source_cid=retry_cid,
        destination_cid=client_cid,
        original_destination_cid=original_cid,
        retry_token=token,
    )


def close_initial(
    version: int, client_cid: bytes, server_cid: bytes, error: QuicErrorCode, reason: str = ""
) -> bytes:
    """A server Initial packet holding only a CONNECTION_CLOSE with the
    transport ``error``: the answer to an Initial from ``client_cid`` to
    ``server_cid`` that we refuse without creating a connection.  It is
    protected with the Initial keys of ``server_cid``, as the client
    expects, and is smaller than the Initial that caused it."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=server_cid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=server_cid,
        peer_cid=client_cid,
        version=version,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
    )
    phrase = reason.encode("utf-8")[:200]
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=TRANSPORT_CLOSE_FRAME_CAPACITY + len(phrase)
    )
    buf.push_uint_var(error)
    buf.push_uint_var(QuicFrameType.PADDING)  # not caused by a particular frame
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return datagrams[0]
