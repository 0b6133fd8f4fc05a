"""Validation of name records: a pure function of (bytes or record, now).

Checks, in order, each failing with its own type:

1. size (``TooLarge``, before any parsing) and canonical decoding
   (``MalformedRecord``, ``UnsupportedVersion``);
2. the name is normalized and inside the zone (``MalformedName``);
3. targets are well formed: IPs of 4/16 bytes, parseable peer IDs and
   multiaddrs, DNS-sized TXT strings, SRV-like services
   (``MalformedRecord``), and each kind carries only what it may;
4. the owner key parses and signed the record (``ForgedSignature``);
5. ``now < expires <= now + max_validity`` (``Expired``,
   ``ValidityTooLong``);
6. ownership: a self-certifying name's key must be the name's key
   (``WrongOwner``); any other name proves work over (name, owner), either
   its own nonce or through a TRANSFER from a previous owner that did
   (``BadProofOfWork``, ``WrongOwner``, ``ForgedSignature``);
7. a release proof (REGISTER/UPDATE only) is a RELEASE of exactly this
   name, signed by another key (``MalformedRecord``, ``WrongOwner``,
   ``ForgedSignature``).  Its own proof of work and expiry are not checked:
   only the previous owner's signature matters to whoever pinned it, and a
   release stays a fact after it expires.

Policy between two valid records (owner pinning, sequence) is in
``overlay.naming.policy``.
"""

from __future__ import annotations

import multiaddr
import multiaddr.exceptions

from overlay.errors import InvalidKeyError, InvalidPeerId
from overlay.identity import PeerId, PublicKey, public_key_from_protobuf
from overlay.naming.config import NamingConfig
from overlay.naming.errors import (
    BadProofOfWork,
    Expired,
    ForgedSignature,
    InvalidName,
    MalformedName,
    MalformedRecord,
    ValidityTooLong,
    WrongOwner,
)
from overlay.naming.names import ParsedName, normalize_hostname, parse_name
from overlay.naming.pow import verify_pow
from overlay.naming.record import NameRecord, RecordKind, decode_record

__all__ = [
    "DEFAULT_CONFIG",
    "check_release_proof",
    "check_structure",
    "parse_owner_key",
    "validate",
]

DEFAULT_CONFIG = NamingConfig()
_MAX_TXT_BYTES = 255
_MAX_PROTOCOL_BYTES = 255
_MAX_ADDR_BYTES = 512


def parse_owner_key(raw: bytes, what: str = "owner") -> PublicKey:
    try:
        return public_key_from_protobuf(raw)
    except InvalidKeyError as exc:
        raise MalformedRecord(f"{what} key: {exc}") from None


def _parse_record_name(record: NameRecord, zone: str) -> ParsedName:
    try:
        parsed = parse_name(record.name, zone)
    except InvalidName as exc:
        raise MalformedName(record.name, exc.rule, exc.detail) from None
    if parsed.name != record.name:
        raise MalformedName(record.name, "normalized", f"should be written {parsed.name!r}")
    return parsed


def _check_multiaddr(addr: bytes) -> None:
    if not 0 < len(addr) <= _MAX_ADDR_BYTES:
        raise MalformedRecord(f"a target multiaddr must hold 1..{_MAX_ADDR_BYTES} bytes")
    try:
        # The binary parser accepts truncated values; a text round trip
        # catches them, so only one encoding of an address is accepted.
        text = str(multiaddr.Multiaddr(addr))
        canonical = multiaddr.Multiaddr(text).to_bytes()
    # py-multiaddr raises assorted types for malformed binary input.
    except (multiaddr.exceptions.Error, ValueError, TypeError, LookupError) as exc:
        raise MalformedRecord(f"target multiaddr does not parse: {exc}") from None
    if canonical != addr:
        raise MalformedRecord(f"target multiaddr {text} is not canonically encoded")


def _check_targets(record: NameRecord) -> None:
    for ip in record.ips:
        if len(ip) not in (4, 16):
            raise MalformedRecord(f"an IP address must be 4 or 16 bytes, not {len(ip)}")
    for peer in record.peers:
        try:
            PeerId.from_bytes(peer.peer_id)
        except InvalidPeerId as exc:
            raise MalformedRecord(f"target peer ID: {exc}") from None
        for addr in peer.addrs:
            _check_multiaddr(addr)
    for text in record.txt:
        if len(text.encode("utf-8")) > _MAX_TXT_BYTES:
            raise MalformedRecord(f"a TXT string may hold at most {_MAX_TXT_BYTES} bytes")
    for service in record.services:
        size = len(service.protocol.encode("utf-8"))
        if not 0 < size <= _MAX_PROTOCOL_BYTES or not service.protocol.isprintable():
            raise MalformedRecord("a service protocol must be 1..255 printable bytes")
        if service.target:
            try:
                canonical = normalize_hostname(service.target)
            except InvalidName as exc:
                raise MalformedRecord(f"service target: {exc}") from None
            if canonical != service.target:
                raise MalformedRecord(f"service target should be written {canonical!r}")


def _check_kind(record: NameRecord) -> None:
    if record.kind is RecordKind.TRANSFER:
        if not record.new_owner:
            raise MalformedRecord("a TRANSFER names its new owner")
        parse_owner_key(record.new_owner, "new owner")
        if record.new_owner == record.owner:
            raise MalformedRecord("a TRANSFER to the same owner is meaningless")
    elif record.new_owner:
        raise MalformedRecord("only a TRANSFER carries a new owner")
    if record.kind in (RecordKind.TRANSFER, RecordKind.RELEASE):
        if record.carries_targets:
            raise MalformedRecord(f"a {record.kind.name} record carries no targets")
        if record.transfer_proof:
            raise MalformedRecord(f"a {record.kind.name} record carries no transfer proof")
        if record.release_proof:
            raise MalformedRecord(f"a {record.kind.name} record carries no release proof")


def check_structure(record: NameRecord, config: NamingConfig = DEFAULT_CONFIG) -> ParsedName:
    """Everything that needs neither a key nor a clock."""
    parsed = _parse_record_name(record, config.zone)
    _check_targets(record)
    _check_kind(record)
    return parsed


def _check_signature(record: NameRecord) -> PublicKey:
    owner = parse_owner_key(record.owner)
    if not record.signature or not owner.verify(record.signing_bytes(), record.signature):
        raise ForgedSignature(f"the owner's signature over {record.name!r} does not verify")
    return owner


def _check_transfer_proof(record: NameRecord, config: NamingConfig) -> NameRecord:
    proof = decode_record(record.transfer_proof, config.max_record_bytes)
    check_structure(proof, config)
    if proof.kind is not RecordKind.TRANSFER:
        raise MalformedRecord("a transfer proof must be a TRANSFER record")
    if proof.name != record.name:
        raise WrongOwner(f"the transfer proof is for {proof.name!r}, not {record.name!r}")
    if proof.new_owner != record.owner:
        raise WrongOwner("the transfer proof hands the name to another key")
    _check_signature(proof)
    if not verify_pow(proof.name, proof.owner, proof.pow_nonce, config.pow_bits):
        raise BadProofOfWork(proof.name, config.pow_bits)
    return proof


def check_release_proof(record: NameRecord, config: NamingConfig = DEFAULT_CONFIG) -> NameRecord:
    """The RELEASE ``record`` carries, if it releases exactly this name and
    its signature verifies."""
    proof = decode_record(record.release_proof, config.max_record_bytes)
    check_structure(proof, config)
    if proof.kind is not RecordKind.RELEASE:
        raise MalformedRecord("a release proof must be a RELEASE record")
    if proof.name != record.name:
        raise WrongOwner(f"the release proof is for {proof.name!r}, not {record.name!r}")
    if proof.owner == record.owner:
        raise MalformedRecord("a release proof by the record's own owner is meaningless")
    _check_signature(proof)
    return proof


def validate(
    data: bytes | NameRecord,
    now: float,
    config: NamingConfig = DEFAULT_CONFIG,
    *,
    expected_name: str | None = None,
) -> NameRecord:
    """Return the record if it is valid at ``now`` (unix seconds), else raise
    a ``RecordRejected`` subclass naming the failed rule."""
    if isinstance(data, NameRecord):
        # Re-encode so an in-memory record is held to the wire's size cap.
        data = data.to_bytes()
    record = decode_record(data, config.max_record_bytes)
    parsed = check_structure(record, config)
    if expected_name is not None and record.name != expected_name:
        raise MalformedName(record.name, "key", f"stored under the key of {expected_name!r}")
    owner = _check_signature(record)
    if record.expires <= now:
        raise Expired(record.expires, now)
    limit = now + config.max_validity + config.clock_skew
    if record.expires > limit:
        raise ValidityTooLong(record.expires, limit)
    if record.release_proof:
        check_release_proof(record, config)
    if parsed.owner_peer is not None:
        if not parsed.owner_peer.matches_public_key(owner):
            raise WrongOwner(f"only the key named in {record.name!r} may publish it")
        if record.kind is RecordKind.TRANSFER:
            raise MalformedRecord("a self-certifying name cannot be transferred")
        return record
    if record.transfer_proof:
        _check_transfer_proof(record, config)
    elif not verify_pow(record.name, record.owner, record.pow_nonce, config.pow_bits):
        raise BadProofOfWork(record.name, config.pow_bits)
    return record
