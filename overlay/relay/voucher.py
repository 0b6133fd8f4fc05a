"""Reservation vouchers: the relay's signed statement that ``peer`` may be
reached through ``relay`` until ``expiration`` (circuit-v2.md), sealed in a
signed envelope under domain ``libp2p-relay-rsvp``, payload type 0x0302."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError as _PbDecodeError

from overlay.errors import DecodeError, InvalidPeerId, InvalidSignature
from overlay.identity import PeerId, PrivateKey, open_envelope, seal
from overlay.relay.errors import InvalidVoucher
from overlay.wire.pb import circuit_pb2

__all__ = [
    "VOUCHER_DOMAIN",
    "VOUCHER_PAYLOAD_TYPE",
    "MAX_VOUCHER_SIZE",
    "Voucher",
    "seal_voucher",
    "open_voucher",
]

VOUCHER_DOMAIN: Final = "libp2p-relay-rsvp"
VOUCHER_PAYLOAD_TYPE: Final = b"\x03\x02"
MAX_VOUCHER_SIZE: Final = 2048
"""Two peer IDs, a number and a signature: even with an RSA key it fits."""


@dataclass(frozen=True, slots=True)
class Voucher:
    relay: PeerId
    peer: PeerId
    expiration: int
    """Unix seconds."""


def seal_voucher(relay_key: PrivateKey, voucher: Voucher) -> bytes:
    """The envelope bytes; ``relay_key`` must be ``voucher.relay``'s key."""
    payload = circuit_pb2.ReservationVoucher(
        relay=voucher.relay.to_bytes(),
        peer=voucher.peer.to_bytes(),
        expiration=voucher.expiration,
    ).SerializeToString()
    return seal(relay_key, VOUCHER_DOMAIN, VOUCHER_PAYLOAD_TYPE, payload)


def open_voucher(
    data: bytes,
    *,
    relay: PeerId,
    peer: PeerId,
    expiration: int | None = None,
) -> Voucher:
    """Verify a voucher that must be signed by ``relay`` and name ``relay``
    and ``peer`` (and ``expiration``, when given).  Raises
    ``InvalidVoucher`` for a forged, mis-addressed or malformed one."""
    try:
        env = open_envelope(data, VOUCHER_DOMAIN, MAX_VOUCHER_SIZE)
    except InvalidSignature as exc:
        raise InvalidVoucher(f"voucher signature: {exc}") from None
    except DecodeError as exc:
        raise InvalidVoucher(f"malformed voucher envelope: {exc}") from None
    if env.payload_type != VOUCHER_PAYLOAD_TYPE:
        raise InvalidVoucher(f"voucher payload type {env.payload_type.hex()}, not 0302")
    if env.peer_id != relay:
        raise InvalidVoucher(f"voucher signed by {env.peer_id}, not by the relay {relay}")
    pb = circuit_pb2.ReservationVoucher()
    try:
        pb.ParseFromString(env.payload)
        named_relay = PeerId.from_bytes(bytes(pb.relay))
        named_peer = PeerId.from_bytes(bytes(pb.peer))
    except (_PbDecodeError, InvalidPeerId) as exc:
        raise InvalidVoucher(f"malformed voucher payload: {exc}") from None
    if not pb.HasField("expiration"):
        raise InvalidVoucher("voucher without an expiration")
    if named_relay != relay:
        raise InvalidVoucher(f"voucher names relay {named_relay}, not {relay}")
    if named_peer != peer:
        raise InvalidVoucher(f"voucher is for peer {named_peer}, not {peer}")
    if expiration is not None and pb.expiration != expiration:
        raise InvalidVoucher(
            f"voucher expires at {pb.expiration}, the reservation at {expiration}")
    return Voucher(named_relay, named_peer, pb.expiration)
