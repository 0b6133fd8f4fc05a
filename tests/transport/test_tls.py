"""libp2p certificate generation and every verification rule of tls.md."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from overlay.identity import (
    EcdsaPrivateKey,
    Ed25519PrivateKey,
    PeerId,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
)
from overlay.transport import CertificateError, generate_credentials, verify_certificate_chain
from overlay.transport.tls import (
    LIBP2P_EXTENSION_OID,
    SIGNATURE_PREFIX,
    SignedKey,
    decode_signed_key,
    encode_signed_key,
)

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    "make_key",
    [Ed25519PrivateKey.generate, Secp256k1PrivateKey.generate, EcdsaPrivateKey.generate,
     RsaPrivateKey.generate],
    ids=["ed25519", "secp256k1", "ecdsa", "rsa"],
)
def test_valid_certificate_proves_host_key(make_key: object) -> None:
    key: PrivateKey = make_key()  # type: ignore[operator]
    creds = generate_credentials(key, NOW)
    proven = verify_certificate_chain([creds.certificate], NOW)
    assert proven == key.public_key()
    assert PeerId.from_public_key(proven) == PeerId.from_public_key(key.public_key())


def test_extension_is_critical_and_cert_self_signed() -> None:
    creds = generate_credentials(Ed25519PrivateKey.generate(), NOW)
    ext = creds.certificate.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID)
    assert ext.critical
    assert creds.certificate.issuer == creds.certificate.subject
    assert isinstance(creds.private_key, ec.EllipticCurvePrivateKey)


def test_missing_extension_rejected() -> None:
    creds = generate_credentials(Ed25519PrivateKey.generate(), NOW, include_extension=False)
    with pytest.raises(CertificateError, match="lacks the libp2p"):
        verify_certificate_chain([creds.certificate], NOW)


def test_wrong_signature_rejected() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    # The host key is `key` but the signature comes from `other`.
    value = encode_signed_key(
        SignedKey(public_key=key.public_key().to_protobuf(), signature=other.sign(b"x"))
    )
    creds = generate_credentials(key, NOW, extension_value=value)
    with pytest.raises(CertificateError, match="signature does not verify"):
        verify_certificate_chain([creds.certificate], NOW)


def test_signature_over_other_certificate_key_rejected() -> None:
    key = Ed25519PrivateKey.generate()
    # A SignedKey lifted from another certificate must not verify here.
    donor = generate_credentials(key, NOW).certificate
    value = donor.extensions.get_extension_for_oid(LIBP2P_EXTENSION_OID).value
    assert isinstance(value, x509.UnrecognizedExtension)
    creds = generate_credentials(key, NOW, extension_value=value.value)
    with pytest.raises(CertificateError, match="signature does not verify"):
        verify_certificate_chain([creds.certificate], NOW)


@pytest.mark.parametrize(
    "value",
    [b"", b"\x30\x00", b"\x04\x02ab", b"\x30\x04\x04\x02ab",
     encode_signed_key(SignedKey(b"\x08\x09", b"sig"))],
    ids=["empty", "empty-seq", "not-seq", "one-field", "bad-key"],
)
def test_invalid_signed_key_rejected(value: bytes) -> None:
    creds = generate_credentials(Ed25519PrivateKey.generate(), NOW, extension_value=value)
    with pytest.raises(CertificateError):
        verify_certificate_chain([creds.certificate], NOW)


def test_chain_must_hold_exactly_one_certificate() -> None:
    a = generate_credentials(Ed25519PrivateKey.generate(), NOW).certificate
    b = generate_credentials(Ed25519PrivateKey.generate(), NOW).certificate
    with pytest.raises(CertificateError, match="exactly one"):
        verify_certificate_chain([a, b], NOW)
    with pytest.raises(CertificateError, match="exactly one"):
        verify_certificate_chain([], NOW)


def test_validity_window_enforced() -> None:
    creds = generate_credentials(Ed25519PrivateKey.generate(), NOW)
    with pytest.raises(CertificateError, match="validity"):
        verify_certificate_chain([creds.certificate], NOW - datetime.timedelta(days=1))
    with pytest.raises(CertificateError, match="validity"):
        verify_certificate_chain([creds.certificate], NOW + datetime.timedelta(days=365 * 101))


def _custom_cert(
    host_key: PrivateKey, *, signer: ed25519.Ed25519PrivateKey | None = None,
    extra: x509.ExtensionType | None = None, extra_critical: bool = False,
) -> x509.Certificate:
    """A certificate built by hand: optionally signed by a foreign key or
    carrying an additional extension."""
    cert_key = ed25519.Ed25519PrivateKey.generate()

    spki = cert_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    value = encode_signed_key(
        SignedKey(host_key.public_key().to_protobuf(), host_key.sign(SIGNATURE_PREFIX + spki))
    )
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "1")])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(cert_key.public_key()).serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.UnrecognizedExtension(LIBP2P_EXTENSION_OID, value), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=extra_critical)
    return builder.sign(signer or cert_key, None)


def test_ed25519_certificate_key_accepted() -> None:
    key = Ed25519PrivateKey.generate()
    assert verify_certificate_chain([_custom_cert(key)], NOW) == key.public_key()


def test_bad_self_signature_rejected() -> None:
    cert = _custom_cert(Ed25519PrivateKey.generate(), signer=ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CertificateError, match="self-signature"):
        verify_certificate_chain([cert], NOW)


def test_unknown_critical_extension_rejected_but_noncritical_ignored() -> None:
    key = Ed25519PrivateKey.generate()
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    with pytest.raises(CertificateError, match="unknown critical extension"):
        verify_certificate_chain([_custom_cert(key, extra=unknown, extra_critical=True)], NOW)
    assert verify_certificate_chain([_custom_cert(key, extra=unknown)], NOW) == key.public_key()


def test_signed_key_round_trip_long_lengths() -> None:
    signed = SignedKey(public_key=b"k" * 300, signature=b"s" * 7000)
    assert decode_signed_key(encode_signed_key(signed)) == signed


def test_signed_key_rejects_oversized_and_non_minimal() -> None:
    with pytest.raises(CertificateError, match="exceeds"):
        decode_signed_key(b"\x30" + b"\x00" * 20000)
    # 0x81 0x05: a long-form length for a value that fits the short form.
    with pytest.raises(CertificateError, match="minimal"):
        decode_signed_key(b"\x30\x81\x05\x04\x00\x04\x01a")
    with pytest.raises(CertificateError, match="trailing"):
        decode_signed_key(encode_signed_key(SignedKey(b"a", b"b")) + b"\x00")


@given(st.binary(max_size=300))
def test_signed_key_decoder_never_crashes(data: bytes) -> None:
    try:
        decoded = decode_signed_key(data)
    except CertificateError:
        return
    assert encode_signed_key(decoded) == data


def test_ecdsa_p256_certificate_hash_is_sha256() -> None:
    creds = generate_credentials(Ed25519PrivateKey.generate(), NOW)
    assert isinstance(creds.certificate.signature_hash_algorithm, hashes.SHA256)


def test_verifier_remembers_good_certificates_only() -> None:
    from overlay.transport.tls import CertificateVerifier

    verifier = CertificateVerifier(capacity=2)
    key = Ed25519PrivateKey.generate()
    good = generate_credentials(key, NOW).certificate
    assert verifier([good], NOW) == key.public_key()
    assert verifier([good], NOW) == key.public_key()  # from memory
    # A remembered certificate still expires.
    with pytest.raises(CertificateError, match="validity"):
        verifier([good], NOW + datetime.timedelta(days=365 * 101))
    bad = generate_credentials(key, NOW, include_extension=False).certificate
    for _ in range(2):  # failures are never remembered
        with pytest.raises(CertificateError, match="lacks"):
            verifier([bad], NOW)
    with pytest.raises(CertificateError, match="exactly one"):
        verifier([good, good], NOW)
    # Bounded: the oldest entry is evicted.
    for _ in range(3):
        verifier([generate_credentials(Ed25519PrivateKey.generate(), NOW).certificate], NOW)
    assert len(verifier._verified) == 2
