"""QUIC multiaddrs: parse, validate and format ``/ip4|ip6|dns4|dns6/…/udp/N/quic-v1[/p2p/<id>]``,
and decode the binary multiaddrs that identify and kad carry.

Text addresses come from people (config files, the command line), so their
errors name the offending part and say what would work instead.  Binary
addresses come from peers, so they are bounded and raise ``DecodeError``.
The ``multiaddr`` package supplies the protocol table and codecs; its binary
constructor does not validate, so this module walks binary addresses itself
before anything else reads them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal

from multiaddr import Multiaddr
from multiaddr import exceptions as ma_exceptions
from multiaddr.codecs import codec_by_name
from multiaddr.protocols import P_P2P, P_P2P_CIRCUIT, Protocol, protocol_with_code
from multiaddr.transforms import bytes_to_string

from overlay.errors import DecodeError, InvalidMultiaddr, InvalidPeerId, MessageTooLarge
from overlay.identity.peer_id import PeerId
from overlay.wire.varint import decode_uvarint, encode_uvarint

__all__ = [
    "MAX_MULTIADDR_BYTES",
    "MAX_MULTIADDR_TEXT",
    "HostKind",
    "QuicAddr",
    "parse_quic_multiaddr",
    "format_quic_multiaddr",
    "is_quic_multiaddr",
    "parse_multiaddr",
    "CircuitAddr",
    "parse_circuit_multiaddr",
    "is_dialable_multiaddr",
    "dial_target_error",
    "split_p2p",
    "with_p2p",
    "multiaddr_from_bytes",
    "multiaddr_to_bytes",
]

# Real addresses are tens of bytes; a circuit address with two peer IDs
# stays under 200.  Anything near these limits is garbage or hostile.
MAX_MULTIADDR_BYTES: Final = 1024
MAX_MULTIADDR_TEXT: Final = 2048
_MAX_COMPONENTS: Final = 32
_MAX_DNS_NAME: Final = 253

HostKind = Literal["ip4", "ip6", "dns4", "dns6"]
_HOST_KINDS: Final[tuple[HostKind, ...]] = ("ip4", "ip6", "dns4", "dns6")
_DNS_LABEL_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
)


@dataclass(frozen=True, slots=True)
class QuicAddr:
    """A QUIC-v1 address: host (canonical text), UDP port, the multiaddr
    protocol naming the host, and the optional ``/p2p`` peer."""

    host: str
    port: int
    kind: HostKind
    peer_id: PeerId | None = None

    def __post_init__(self) -> None:
        if self.kind not in _HOST_KINDS:
            raise InvalidMultiaddr(f"unsupported host protocol /{self.kind}")
        object.__setattr__(self, "host", _check_host(self.kind, self.host))
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidMultiaddr(f"invalid port {port!r} in /udp/{port}: must be 0-65535")

    @property
    def family(self) -> Literal[4, 6]:
        """4 for ip4/dns4, 6 for ip6/dns6."""
        return 6 if self.kind in ("ip6", "dns6") else 4

    @property
    def is_dns(self) -> bool:
        return self.kind in ("dns4", "dns6")

    @property
    def socket_address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def with_peer_id(self, peer_id: PeerId | None) -> QuicAddr:
        return QuicAddr(self.host, self.port, self.kind, peer_id)

    def to_multiaddr(self) -> Multiaddr:
        return Multiaddr(str(self))

    def __str__(self) -> str:
        text = f"/{self.kind}/{self.host}/udp/{self.port}/quic-v1"
        if self.peer_id is not None:
            text += f"/p2p/{self.peer_id}"
        return text


# --- text ------------------------------------------------------------------------


def _check_host(kind: HostKind, host: str) -> str:
    """Validate ``host`` for ``kind``; return its canonical text."""
    if not isinstance(host, str) or not host:
        raise InvalidMultiaddr(f"missing host in /{kind}/")
    if kind == "ip4":
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise InvalidMultiaddr(f"invalid IPv4 address {host!r} in /ip4/{host}") from None
    if kind == "ip6":
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidMultiaddr(f"invalid IPv6 address {host!r} in /ip6/{host}") from None
        if address.scope_id is not None:
            raise InvalidMultiaddr(f"IPv6 zone in /ip6/{host} is not supported")
        return str(address)
    _check_dns_name(kind, host)
    return host


def _check_dns_name(kind: str, name: str) -> None:
    if len(name) > _MAX_DNS_NAME:
        raise InvalidMultiaddr(f"DNS name in /{kind}/ is longer than {_MAX_DNS_NAME} characters")
    for label in name.split("."):
        if not label or len(label) > 63 or not set(label) <= _DNS_LABEL_CHARS:
            raise InvalidMultiaddr(f"invalid DNS name {name!r} in /{kind}/{name}")
        if label.startswith("-") or label.endswith("-"):
            raise InvalidMultiaddr(f"invalid DNS name {name!r} in /{kind}/{name}")


def _parse_port(value: str) -> int:
    # int() would also take "+1", " 1" and "1_0"; a port is plain digits.
    if not value.isascii() or not value.isdigit() or len(value) > 5 or int(value) > 65535:
        raise InvalidMultiaddr(f"invalid port {value!r} in /udp/{value}: must be 0-65535")
    return int(value)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text_of(addr: str | Multiaddr) -> str:
    if isinstance(addr, Multiaddr):
        try:
            return _validated_text(addr.to_bytes())
        except DecodeError as exc:
            raise InvalidMultiaddr(str(exc)) from None
    if not isinstance(addr, str):
        raise InvalidMultiaddr(f"expected a multiaddr string, got {type(addr).__name__}")
    if len(addr) > MAX_MULTIADDR_TEXT:
        raise InvalidMultiaddr(f"multiaddr of {len(addr)} characters is too long")
    return addr


def parse_quic_multiaddr(addr: str | Multiaddr) -> QuicAddr:
    """Parse ``/ip4|ip6|dns4|dns6/<host>/udp/<port>/quic-v1[/p2p/<peer>]``.

    Raises ``InvalidMultiaddr`` whose message names the offending part; the
    deprecated ``/quic`` (draft-29) gets a hint to use ``/quic-v1``.
    """
    text = _text_of(addr)
    shown = _short(text)
    if not text.startswith("/"):
        raise InvalidMultiaddr(
            f"multiaddr {shown!r} must start with '/' (e.g. /ip4/127.0.0.1/udp/4001/quic-v1)"
        )
    parts = text[1:].split("/")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # tolerate one trailing slash
    if "" in parts:
        raise InvalidMultiaddr(f"empty component ('//') in {shown!r}")

    kind_text = parts[0]
    if kind_text not in _HOST_KINDS:
        hint = " (use /dns4 or /dns6)" if kind_text in ("dns", "dnsaddr") else ""
        raise InvalidMultiaddr(
            f"{shown!r} must start with /ip4, /ip6, /dns4 or /dns6, not /{kind_text}{hint}"
        )
    kind: HostKind = kind_text
    if len(parts) < 2:
        raise InvalidMultiaddr(f"missing host after /{kind} in {shown!r}")
    host = _check_host(kind, parts[1])

    if len(parts) < 3:
        raise InvalidMultiaddr(f"missing /udp/<port> after /{kind}/{parts[1]} in {shown!r}")
    if parts[2] != "udp":
        hint = "; QUIC runs over UDP" if parts[2] == "tcp" else ""
        raise InvalidMultiaddr(f"expected /udp after /{kind}/{parts[1]}, got /{parts[2]}{hint}")
    if len(parts) < 4:
        raise InvalidMultiaddr(f"missing port after /udp in {shown!r}")
    port = _parse_port(parts[3])

    if len(parts) < 5:
        raise InvalidMultiaddr(f"missing /quic-v1 after /udp/{port} in {shown!r}")
    if parts[4] == "quic":
        fixed = "/".join(["", *parts[:4], "quic-v1", *parts[5:]])
        raise InvalidMultiaddr(
            f"/quic is the deprecated QUIC draft-29, which is not supported; "
            f"use /quic-v1 instead: {_short(fixed)}"
        )
    if parts[4] != "quic-v1":
        raise InvalidMultiaddr(f"expected /quic-v1 after /udp/{port}, got /{parts[4]}")

    peer_id: PeerId | None = None
    rest = parts[5:]
    if rest and rest[0] in ("p2p", "ipfs"):
        if len(rest) < 2:
            raise InvalidMultiaddr(f"missing peer ID after /{rest[0]} in {shown!r}")
        try:
            peer_id = PeerId.from_string(rest[1])
        except InvalidPeerId as exc:
            # exc already reads "invalid peer ID '<text>': <reason>".
            raise InvalidMultiaddr(f"{exc} in /{rest[0]}/{_short(rest[1], 30)}") from None
        rest = rest[2:]
    if rest:
        raise InvalidMultiaddr(f"unsupported /{'/'.join(rest)} after /quic-v1 in {shown!r}")
    return QuicAddr(host, port, kind, peer_id)


def is_quic_multiaddr(addr: str | Multiaddr) -> bool:
    try:
        parse_quic_multiaddr(addr)
    except InvalidMultiaddr:
        return False
    return True


def format_quic_multiaddr(host: str, port: int, peer_id: PeerId | None = None) -> str:
    """``/ip4`` or ``/ip6`` text for a socket address (IPv6 may be bracketed)."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        raise InvalidMultiaddr(
            f"{host!r} is not an IP address; build QuicAddr(host, port, 'dns4') for a DNS name"
        ) from None
    kind: HostKind = "ip4" if address.version == 4 else "ip6"
    return str(QuicAddr(literal, port, kind, peer_id))


def parse_multiaddr(addr: str | Multiaddr) -> Multiaddr:
    """Any multiaddr the ``multiaddr`` package knows, with typed errors."""
    text = _text_of(addr)
    if isinstance(addr, Multiaddr):
        return addr
    if not text.startswith("/"):
        raise InvalidMultiaddr(f"multiaddr {_short(text)!r} must start with '/'")
    try:
        parsed = Multiaddr(text)
    except (ma_exceptions.Error, ValueError) as exc:
        raise InvalidMultiaddr(f"invalid multiaddr {_short(text)!r}: {_first_line(exc)}") from None
    data = parsed.to_bytes()
    if not data:
        raise InvalidMultiaddr(f"empty multiaddr {_short(text)!r}")
    try:
        _validated_text(data)
    except DecodeError as exc:
        raise InvalidMultiaddr(f"invalid multiaddr {_short(text)!r}: {exc}") from None
    return parsed


def _first_line(exc: BaseException) -> str:
    # multiaddr's errors carry a short ``message``; str() repeats the input.
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


# --- binary ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Component:
    protocol: Protocol
    value: bytes
    start: int
    end: int


def _components(data: bytes) -> list[_Component]:
    """Walk a binary multiaddr, checking every code and length against the
    buffer before slicing; raise ``DecodeError`` on anything malformed."""
    out: list[_Component] = []
    offset = 0
    while offset < len(data):
        if len(out) >= _MAX_COMPONENTS:
            raise DecodeError(f"multiaddr has more than {_MAX_COMPONENTS} components")
        start = offset
        code, offset = decode_uvarint(data, offset)
        try:
            protocol = protocol_with_code(code)
        except ma_exceptions.ProtocolNotFoundError:
            raise DecodeError(f"unknown multiaddr protocol code 0x{code:x}") from None
        size = codec_by_name(protocol.codec).SIZE
        if size < 0:
            length, offset = decode_uvarint(data, offset)
        else:
            length = size // 8
        if offset + length > len(data):
            raise DecodeError(f"multiaddr component /{protocol.name} is truncated")
        value = data[offset : offset + length]
        offset += length
        if code == P_P2P:
            # The codec would take any CID; a peer ID must be a valid one.
            try:
                PeerId.from_bytes(value)
            except InvalidPeerId as exc:
                raise DecodeError(f"invalid peer ID in /p2p: {exc}") from None
        out.append(_Component(protocol, value, start, offset))
    return out


def _validated_text(data: bytes) -> str:
    if len(data) > MAX_MULTIADDR_BYTES:
        raise MessageTooLarge(len(data), MAX_MULTIADDR_BYTES)
    _components(data)
    try:
        # The codecs check each value (IP lengths, UTF-8, CIDs).
        return str(bytes_to_string(data))
    except (ma_exceptions.Error, ValueError) as exc:
        raise DecodeError(f"invalid multiaddr value: {_first_line(exc)}") from None


def multiaddr_from_bytes(data: bytes, limit: int = MAX_MULTIADDR_BYTES) -> Multiaddr:
    """Decode a binary multiaddr from a peer; raise ``MessageTooLarge`` over
    ``limit`` and ``DecodeError`` for anything malformed or empty."""
    if len(data) > limit:
        raise MessageTooLarge(len(data), limit)
    data = bytes(data)
    if not data:
        raise DecodeError("empty multiaddr")
    _validated_text(data)
    return Multiaddr(data)


def multiaddr_to_bytes(addr: str | Multiaddr) -> bytes:
    return bytes(parse_multiaddr(addr).to_bytes())


def split_p2p(addr: str | Multiaddr) -> tuple[Multiaddr, PeerId | None]:
    """Split a trailing ``/p2p/<peer>`` off ``addr``."""
    data = parse_multiaddr(addr).to_bytes()
    try:
        components = _components(data)
    except DecodeError as exc:
        raise InvalidMultiaddr(str(exc)) from None
    if not components or components[-1].protocol.code != P_P2P:
        return Multiaddr(data), None
    last = components[-1]
    try:
        peer_id = PeerId.from_bytes(last.value)
    except InvalidPeerId as exc:
        raise InvalidMultiaddr(f"invalid peer ID in /p2p: {exc}") from None
    return Multiaddr(data[: last.start]), peer_id


def with_p2p(addr: str | Multiaddr, peer_id: PeerId) -> Multiaddr:
    """``addr`` ending in ``/p2p/<peer_id>``; an address that already names
    that peer is returned as is, one naming another peer is an error."""
    base, existing = split_p2p(addr)
    if existing is not None and existing != peer_id:
        raise InvalidMultiaddr(f"{base}/p2p/{existing} already names another peer than {peer_id}")
    return Multiaddr(base.to_bytes() + _p2p_component(peer_id))


def _p2p_component(peer_id: PeerId) -> bytes:
    return encode_uvarint(P_P2P) + encode_uvarint(len(peer_id.multihash)) + peer_id.multihash


# --- circuit addresses -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CircuitAddr:
    """``[<relay address>]/p2p/<relay>/p2p-circuit[/p2p/<target>]``."""

    relay_addr: Multiaddr
    """How to reach the relay, ending in ``/p2p/<relay>`` (only that when
    the address names no way to reach it)."""
    relay: PeerId
    target: PeerId | None

    @property
    def relay_has_address(self) -> bool:
        """False when the address is ``/p2p/<relay>/p2p-circuit…`` alone."""
        return bytes(split_p2p(self.relay_addr)[0].to_bytes()) != b""


def parse_circuit_multiaddr(addr: str | Multiaddr) -> CircuitAddr:
    """Parse a circuit relay address; raise ``InvalidMultiaddr`` naming what
    is wrong.  One ``/p2p-circuit`` only: circuits over circuits are refused
    (relays refuse them too)."""
    data = parse_multiaddr(addr).to_bytes()
    shown = _short(str(Multiaddr(data)))
    try:
        components = _components(data)
    except DecodeError as exc:
        raise InvalidMultiaddr(str(exc)) from None
    at = [i for i, c in enumerate(components) if c.protocol.code == P_P2P_CIRCUIT]
    if len(at) != 1:
        raise InvalidMultiaddr(
            f"{shown!r} is not a circuit address (one /p2p-circuit)"
            if not at else f"{shown!r} relays over a relay, which is not supported"
        )
    index = at[0]
    if index == 0 or components[index - 1].protocol.code != P_P2P:
        raise InvalidMultiaddr(f"/p2p-circuit must follow /p2p/<relay> in {shown!r}")
    rest = components[index + 1 :]
    target: PeerId | None = None
    if rest:
        if len(rest) != 1 or rest[0].protocol.code != P_P2P:
            raise InvalidMultiaddr(f"only /p2p/<target> may follow /p2p-circuit in {shown!r}")
        target = PeerId.from_bytes(rest[0].value)
    relay_component = components[index - 1]
    relay = PeerId.from_bytes(relay_component.value)
    if target == relay:
        raise InvalidMultiaddr(f"the relay cannot relay to itself in {shown!r}")
    return CircuitAddr(Multiaddr(data[: relay_component.end]), relay, target)


def is_dialable_multiaddr(addr: str | Multiaddr) -> bool:
    """True for the shapes our transports dial: a QUIC address, or a circuit
    address whose relay part is a QUIC address or nothing (each with an
    optional trailing ``/p2p``)."""
    try:
        parse_quic_multiaddr(addr)
        return True
    except InvalidMultiaddr:
        pass
    try:
        circuit = parse_circuit_multiaddr(addr)
        if circuit.relay_has_address:
            parse_quic_multiaddr(circuit.relay_addr)
    except InvalidMultiaddr:
        return False
    return True


def dial_target_error(addr: str) -> str | None:
    """None if ``addr`` is something to dial (an address our transports take,
    or ``/p2p/<id>`` alone), else a one-line reason for a person."""
    if is_dialable_multiaddr(addr):
        return None
    try:
        parsed = parse_multiaddr(addr)
        bare, peer = split_p2p(parsed)
        if peer is not None and not bare.to_bytes():
            return None
        if "/p2p-circuit" in str(parsed):
            circuit = parse_circuit_multiaddr(parsed)
            parse_quic_multiaddr(circuit.relay_addr)
        else:
            parse_quic_multiaddr(parsed)
    except InvalidMultiaddr as exc:
        return str(exc)
    return f"{_short(addr)!r} is neither a QUIC nor a /p2p-circuit address"
