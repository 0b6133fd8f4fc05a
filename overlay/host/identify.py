"""libp2p identify: building, parsing and exchanging the Identify message.

``/ipfs/id/1.0.0``: the responder writes one uvarint-prefixed message and
closes.  ``/ipfs/id/push/1.0.0``: the sender writes one and closes; fields
absent from a push leave what we knew unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError as ProtobufDecodeError
from multiaddr import Multiaddr

from overlay.errors import DecodeError, InvalidMultiaddr, OverlayError, RemoteProtocolError
from overlay.host.addrs import observed_to_quic
from overlay.identity import PeerId, PrivateKey, PublicKey, public_key_from_protobuf
from overlay.identity.peer_record import open_peer_record
from overlay.multiaddrs import multiaddr_from_bytes, split_p2p
from overlay.wire.pb.identify_pb2 import Identify
from overlay.wire.stream import ByteStream
from overlay.wire.varint import frame, read_frame

__all__ = [
    "IDENTIFY_PROTOCOL",
    "IDENTIFY_PUSH_PROTOCOL",
    "IdentifyInfo",
    "IdentifyMismatch",
    "build_identify",
    "parse_identify",
    "read_identify",
    "write_identify",
]

IDENTIFY_PROTOCOL = "/ipfs/id/1.0.0"
IDENTIFY_PUSH_PROTOCOL = "/ipfs/id/push/1.0.0"
_MAX_ADDR_BYTES = 1024
_MAX_PROTOCOL_CHARS = 1024
_MAX_VERSION_CHARS = 256


class IdentifyMismatch(RemoteProtocolError):
    """The identify publicKey (or signed record) belongs to another peer."""


@dataclass(frozen=True, slots=True)
class IdentifyInfo:
    """What a peer told us about itself.  ``None``/empty = field absent."""

    peer_id: PeerId
    public_key: PublicKey | None
    agent_version: str | None
    protocol_version: str | None
    protocols: tuple[str, ...]
    listen_addrs: tuple[Multiaddr, ...]
    observed_addr: Multiaddr | None
    """Where the peer sees us connecting from, in QUIC form (see ``observed_to_quic``)."""
    record_seq: int | None = None
    """Sequence number of a valid signed peer record, if one was sent."""
    has_protocols: bool = True
    """False if a push omitted the protocols field."""
    has_listen_addrs: bool = True
    """False if a push omitted the listen addresses."""


def _addr_from_bytes(data: bytes) -> Multiaddr | None:
    try:
        return multiaddr_from_bytes(data, _MAX_ADDR_BYTES)
    except (InvalidMultiaddr, DecodeError):
        return None


def build_identify(
    private_key: PrivateKey,
    *,
    listen_addrs: Sequence[Multiaddr],
    protocols: Sequence[str],
    observed_addr: Multiaddr | None,
    agent_version: str,
    protocol_version: str,
    signed_peer_record: bytes | None = None,
) -> bytes:
    msg = Identify(
        publicKey=private_key.public_key().to_protobuf(),
        listenAddrs=[addr.to_bytes() for addr in listen_addrs],
        protocols=list(protocols),
        agentVersion=agent_version,
        protocolVersion=protocol_version,
    )
    if observed_addr is not None:
        msg.observedAddr = observed_addr.to_bytes()
    if signed_peer_record is not None:
        msg.signedPeerRecord = signed_peer_record
    return msg.SerializeToString()


def parse_identify(
    data: bytes, peer_id: PeerId, *, max_addrs: int = 32, max_protocols: int = 128
) -> IdentifyInfo:
    """Decode and check an Identify message received from ``peer_id``.

    Malformed addresses are skipped (other implementations send ones we
    cannot parse); a key or signed record of another peer is an error.
    """
    msg = Identify()
    try:
        msg.ParseFromString(data)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"malformed identify message: {exc}") from exc
    public_key: PublicKey | None = None
    if msg.HasField("publicKey"):
        public_key = public_key_from_protobuf(msg.publicKey)
        if not peer_id.matches_public_key(public_key):
            raise IdentifyMismatch(f"identify public key does not belong to {peer_id}")
    protocols = tuple(p for p in msg.protocols[:max_protocols] if 0 < len(p) <= _MAX_PROTOCOL_CHARS)
    addrs = [a for a in (_addr_from_bytes(raw) for raw in msg.listenAddrs[:max_addrs]) if a]
    record_seq: int | None = None
    if msg.HasField("signedPeerRecord"):
        record = _open_record(msg.signedPeerRecord, peer_id)
        if record is not None:
            record_seq, record_addrs = record
            # The signed addresses are authoritative, as in go-libp2p.
            addrs = record_addrs[:max_addrs]
    observed = _addr_from_bytes(msg.observedAddr) if msg.HasField("observedAddr") else None
    if observed is not None:
        observed = observed_to_quic(observed)
    addrs = [_without_own_p2p(a, peer_id) for a in addrs]
    return IdentifyInfo(
        peer_id=peer_id,
        public_key=public_key,
        agent_version=msg.agentVersion[:_MAX_VERSION_CHARS] if msg.HasField("agentVersion") else None,
        protocol_version=(
            msg.protocolVersion[:_MAX_VERSION_CHARS] if msg.HasField("protocolVersion") else None
        ),
        protocols=protocols,
        listen_addrs=tuple(dict.fromkeys(addrs)),
        observed_addr=observed,
        record_seq=record_seq,
        has_protocols=bool(msg.protocols),
        has_listen_addrs=bool(msg.listenAddrs) or record_seq is not None,
    )


def _without_own_p2p(addr: Multiaddr, peer_id: PeerId) -> Multiaddr:
    # py-libp2p signs its listen addresses with its own /p2p suffix; the
    # peerstore keys addresses by peer already, so keep them bare.  A /p2p of
    # another peer (a relay) is part of the route and stays.
    try:
        bare, suffix = split_p2p(addr)
    except OverlayError:
        return addr
    return bare if suffix == peer_id else addr


def _open_record(envelope: bytes, peer_id: PeerId) -> tuple[int, list[Multiaddr]] | None:
    try:
        record = open_peer_record(envelope)
    except OverlayError:
        # A broken record alone does not void the rest of identify.
        return None
    if record.peer_id != peer_id:
        raise IdentifyMismatch(f"signed peer record is for {record.peer_id}, not {peer_id}")
    addrs = [_addr_from_bytes(raw) for raw in record.addrs]
    return record.seq, [a for a in addrs if a is not None]


async def write_identify(stream: ByteStream, message: bytes) -> None:
    stream.write(frame(message))
    await stream.drain()
    await stream.close()


async def read_identify(stream: ByteStream, limit: int, max_frames: int = 8) -> bytes:
    """Read frames until EOF and join them.

    go-libp2p may split one Identify across several frames (the signed
    record apart); serialized protobufs concatenate into their merge.
    ``limit`` bounds the total.
    """
    parts: list[bytes] = []
    total = 0
    for _ in range(max_frames):
        data = await read_frame(stream, limit - total)
        if data is None:
            break
        parts.append(data)
        total += len(data)
    else:
        raise DecodeError(f"identify sent more than {max_frames} frames")
    if not parts:
        raise DecodeError("identify stream closed without a message")
    return b"".join(parts)
