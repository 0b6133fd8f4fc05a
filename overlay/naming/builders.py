"""Helpers an owner uses to make signed records (register, update,
transfer, release).  Pure: the caller supplies times and sequence numbers.

Owners should use a sequence that never goes back, e.g. the unix time in
nanoseconds at publication, so a restart from an old backup cannot produce a
sequence that storage nodes consider stale.
"""

from __future__ import annotations

from overlay.errors import LocalProtocolError
from overlay.identity import PrivateKey, PublicKey
from overlay.naming.record import NameRecord, PeerTarget, RecordKind, Service, sign_record

__all__ = ["make_record", "make_release", "make_transfer"]


def make_record(
    key: PrivateKey,
    name: str,
    *,
    sequence: int,
    expires: int,
    ttl: int,
    peers: tuple[PeerTarget, ...] = (),
    ips: tuple[bytes, ...] = (),
    services: tuple[Service, ...] = (),
    txt: tuple[str, ...] = (),
    pow_nonce: int = 0,
    transfer_proof: bytes = b"",
    release_proof: bytes = b"",
    kind: RecordKind = RecordKind.REGISTER,
) -> NameRecord:
    """A signed REGISTER or UPDATE record; ``name`` must be normalized.
    ``release_proof`` is the previous owner's RELEASE of the name (bytes)."""
    if kind not in (RecordKind.REGISTER, RecordKind.UPDATE):
        raise LocalProtocolError("make_record builds REGISTER or UPDATE records")
    record = NameRecord(
        name=name,
        owner=key.public_key().to_protobuf(),
        sequence=sequence,
        expires=expires,
        ttl=ttl,
        kind=kind,
        peers=peers,
        ips=ips,
        services=services,
        txt=txt,
        pow_nonce=pow_nonce,
        transfer_proof=transfer_proof,
        release_proof=release_proof,
    )
    return sign_record(record, key)


def make_transfer(
    key: PrivateKey,
    name: str,
    new_owner: PublicKey,
    *,
    sequence: int,
    expires: int,
    pow_nonce: int,
) -> NameRecord:
    """A TRANSFER handing ``name`` to ``new_owner``.  Publish it, and give
    its bytes to the new owner, who puts them in ``transfer_proof`` of the
    records it publishes; ``sequence`` must exceed every sequence the
    current owner used, or nodes holding a newer record refuse it."""
    record = NameRecord(
        name=name,
        owner=key.public_key().to_protobuf(),
        sequence=sequence,
        expires=expires,
        ttl=0,
        kind=RecordKind.TRANSFER,
        new_owner=new_owner.to_protobuf(),
        pow_nonce=pow_nonce,
    )
    return sign_record(record, key)


def make_release(
    key: PrivateKey, name: str, *, sequence: int, expires: int, pow_nonce: int
) -> NameRecord:
    """A RELEASE freeing ``name``.  Its ``expires`` should reach the latest
    expiry of the owner's earlier records, so storage nodes keep refusing
    replays of those until they would have expired anyway."""
    record = NameRecord(
        name=name,
        owner=key.public_key().to_protobuf(),
        sequence=sequence,
        expires=expires,
        ttl=0,
        kind=RecordKind.RELEASE,
        pow_nonce=pow_nonce,
    )
    return sign_record(record, key)
