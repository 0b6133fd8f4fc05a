"""libp2p TLS certificates (libp2p/specs tls/tls.md).

Each side presents one self-signed certificate whose key is ephemeral and
unrelated to the host key.  The host key proves itself through the SignedKey
extension: the host public key (libp2p protobuf) and the host key's signature
over a fixed prefix and the certificate key's SubjectPublicKeyInfo.

No I/O here: callers pass the wall-clock time used for validity checks.
"""

from __future__ import annotations

import datetime
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID, NameOID

from overlay.errors import InvalidKeyError
from overlay.identity import PrivateKey, PublicKey, public_key_from_protobuf
from overlay.transport.errors import CertificateError

__all__ = [
    "LIBP2P_EXTENSION_OID",
    "SIGNATURE_PREFIX",
    "MAX_SIGNED_KEY_SIZE",
    "TlsCredentials",
    "SignedKey",
    "CertificateVerifier",
    "encode_signed_key",
    "decode_signed_key",
    "generate_credentials",
    "verify_certificate_chain",
]

LIBP2P_EXTENSION_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX: Final = b"libp2p-tls-handshake:"

# The largest legitimate value holds an 8192-bit RSA key and signature,
# about 2.2 KiB; the limit only has to stop absurd inputs early.
MAX_SIGNED_KEY_SIZE: Final = 16 * 1024

# Extensions we understand well enough to accept when marked critical.
_KNOWN_CRITICAL: Final = frozenset(
    {
        LIBP2P_EXTENSION_OID,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
    }
)

# The certificate key is ephemeral, so a long validity costs nothing and
# spares a long-running endpoint from rotating it (go-libp2p does the same).
_VALIDITY: Final = datetime.timedelta(days=365 * 100)
_CLOCK_SKEW: Final = datetime.timedelta(hours=1)

_TAG_SEQUENCE: Final = 0x30
_TAG_OCTET_STRING: Final = 0x04


@dataclass(frozen=True, slots=True)
class SignedKey:
    """The value of the libp2p extension."""

    public_key: bytes
    """The host's public key as a libp2p PublicKey protobuf."""
    signature: bytes
    """The host key's signature over SIGNATURE_PREFIX ‖ certificate SPKI."""


@dataclass(frozen=True, slots=True)
class TlsCredentials:
    """A certificate and its (ephemeral) private key, ready for aioquic."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


# --- SignedKey DER ----------------------------------------------------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def encode_signed_key(signed: SignedKey) -> bytes:
    """DER ``SEQUENCE { publicKey OCTET STRING, signature OCTET STRING }``."""
    body = _der(_TAG_OCTET_STRING, signed.public_key) + _der(_TAG_OCTET_STRING, signed.signature)
    return _der(_TAG_SEQUENCE, body)


def _read_tlv(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """Read one DER element with ``tag`` at ``pos``; return (body, next pos)."""
    if pos + 2 > len(data):
        raise CertificateError("SignedKey is truncated")
    if data[pos] != tag:
        raise CertificateError(f"SignedKey: expected DER tag 0x{tag:02x}, got 0x{data[pos]:02x}")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CertificateError("SignedKey has an invalid DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise CertificateError("SignedKey DER length is not minimal")
        pos += count
    end = pos + length
    if end > len(data):
        raise CertificateError("SignedKey is truncated")
    return data[pos:end], end


def decode_signed_key(data: bytes) -> SignedKey:
    """Parse the extension value strictly (DER, no trailing bytes)."""
    if len(data) > MAX_SIGNED_KEY_SIZE:
        raise CertificateError(f"SignedKey of {len(data)} bytes exceeds {MAX_SIGNED_KEY_SIZE}")
    body, end = _read_tlv(data, 0, _TAG_SEQUENCE)
    if end != len(data):
        raise CertificateError("trailing bytes after SignedKey")
    public_key, pos = _read_tlv(body, 0, _TAG_OCTET_STRING)
    signature, pos = _read_tlv(body, pos, _TAG_OCTET_STRING)
    if pos != len(body):
        raise CertificateError("unexpected fields in SignedKey")
    return SignedKey(public_key=public_key, signature=signature)


# --- certificates -----------------------------------------------------------


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def generate_credentials(
    host_key: PrivateKey,
    now: datetime.datetime,
    *,
    extension_value: bytes | None = None,
    include_extension: bool = True,
) -> TlsCredentials:
    """A fresh P-256 certificate carrying ``host_key``'s SignedKey.

    ``extension_value`` and ``include_extension`` exist so tests can build
    the malformed certificates a hostile peer would present.
    """
    cert_key = ec.generate_private_key(ec.SECP256R1())
    if extension_value is None:
        signature = host_key.sign(SIGNATURE_PREFIX + _spki(cert_key.public_key()))
        extension_value = encode_signed_key(
            SignedKey(public_key=host_key.public_key().to_protobuf(), signature=signature)
        )
    serial = secrets.randbits(63) + 1
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial))])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(cert_key.public_key())
        .serial_number(serial)
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
    )
    if include_extension:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, extension_value), critical=True
        )
    certificate = builder.sign(cert_key, hashes.SHA256())
    return TlsCredentials(certificate=certificate, private_key=cert_key)


def verify_certificate_chain(
    chain: Sequence[x509.Certificate], now: datetime.datetime
) -> PublicKey:
    """Apply every check of tls.md and return the proven host public key.

    Raises ``CertificateError`` naming the failed check.
    """
    if len(chain) != 1:
        raise CertificateError(f"expected exactly one certificate, got {len(chain)}")
    cert = chain[0]
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError("certificate is outside its validity window")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm, _CryptoInvalidSignature) as exc:
        raise CertificateError(f"certificate self-signature is invalid: {exc}") from None
    value = _libp2p_extension(cert)
    signed = decode_signed_key(value)
    try:
        host_key = public_key_from_protobuf(signed.public_key)
    except InvalidKeyError as exc:
        raise CertificateError(f"SignedKey holds an invalid host key: {exc}") from None
    try:
        spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"certificate key is unusable: {exc}") from None
    if not host_key.verify(SIGNATURE_PREFIX + spki, signed.signature):
        raise CertificateError("SignedKey signature does not verify with the host key")
    return host_key


def _libp2p_extension(cert: x509.Certificate) -> bytes:
    try:
        extensions = cert.extensions
    except ValueError as exc:  # duplicate or malformed extensions
        raise CertificateError(f"certificate extensions are malformed: {exc}") from None
    value: bytes | None = None
    for ext in extensions:
        if ext.oid == LIBP2P_EXTENSION_OID:
            if not isinstance(ext.value, x509.UnrecognizedExtension):
                raise CertificateError("libp2p extension has an unexpected form")
            value = ext.value.value
        elif ext.critical and ext.oid not in _KNOWN_CRITICAL:
            raise CertificateError(f"unknown critical extension {ext.oid.dotted_string}")
    if value is None:
        raise CertificateError("certificate lacks the libp2p public key extension")
    return value



class CertificateVerifier:
    """``verify_certificate_chain`` with a memory of certificates that
    already passed.

    Peers reuse one certificate across connections, so a reconnect skips
    the two signature checks (about 0.2 ms).  Only the validity window,
    which depends on ``now``, is checked again; a failed certificate is
    never remembered.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._verified: OrderedDict[bytes, tuple[x509.Certificate, PublicKey]] = OrderedDict()

    def __call__(self, chain: Sequence[x509.Certificate], now: datetime.datetime) -> PublicKey:
        if len(chain) == 1:
            der = chain[0].public_bytes(Encoding.DER)
            hit = self._verified.get(der)
            if hit is not None:
                cert, host_key = hit
                if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                    raise CertificateError("certificate is outside its validity window")
                self._verified.move_to_end(der)
                return host_key
        host_key = verify_certificate_chain(chain, now)
        if self._capacity > 0:
            self._verified[chain[0].public_bytes(Encoding.DER)] = (chain[0], host_key)
            if len(self._verified) > self._capacity:
                self._verified.popitem(last=False)
        return host_key
