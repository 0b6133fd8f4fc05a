"""libp2p mDNS records (pure): the ``dnsaddr=`` TXT entries we announce and
the ones we read from other peers (libp2p/specs ``discovery/mdns.md``).

A peer answers ``_p2p._udp.local PTR`` with ``<peer-name>._p2p._udp.local``,
where the peer name is 32–63 random characters (not the peer ID: a peer
ID does not fit a DNS label and would tie the announcement to the key),
and a TXT record on that name holding one ``dnsaddr=<multiaddr>/p2p/<id>``
character-string per address.  A character-string holds at most 255
bytes, so a longer address cannot be announced at all.

What go, rust and js libp2p accept, and so do we: entries without the
``dnsaddr=`` prefix are ignored (DNS-SD tools add their own keys); each
address must end in ``/p2p/<id>``; every entry of one record must name the
same peer (rust drops the others); our own peer ID is ignored.  None of
them filters addresses by subnet, so neither do we; we keep only what our
transport can dial (QUIC-v1 on an IP address that is neither unspecified
nor multicast).
"""

from __future__ import annotations

import ipaddress
import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from multiaddr import Multiaddr

from overlay.errors import DecodeError, InvalidMultiaddr, MessageTooLarge
from overlay.identity import PeerId
from overlay.multiaddrs import QuicAddr, parse_multiaddr, parse_quic_multiaddr, split_p2p

__all__ = [
    "SERVICE_TYPE",
    "DNSADDR_PREFIX",
    "MAX_TXT_STRING",
    "MAX_TXT_ANNOUNCE",
    "MAX_TXT_RDATA",
    "MAX_TXT_STRINGS",
    "MAX_PEER_ADDRS",
    "MdnsDecodeError",
    "TxtTooLarge",
    "BadEntry",
    "MixedPeers",
    "Announcement",
    "Sighting",
    "random_peer_name",
    "build_announcement",
    "encode_txt",
    "decode_txt",
    "parse_entry",
    "parse_txt",
]

SERVICE_TYPE: Final = "_p2p._udp.local."
"""The DNS-SD service every libp2p peer announces (trailing dot: zeroconf's form)."""
DNSADDR_PREFIX: Final = b"dnsaddr="
MAX_TXT_STRING: Final = 255
"""An RFC 1035 character-string carries one length byte."""
MAX_TXT_ANNOUNCE: Final = 1200
"""Bytes of TXT data we announce: with the PTR, SRV and A records it fits
one Ethernet-sized packet, and a record cannot be split across packets."""
MAX_TXT_RDATA: Final = 9000
"""The largest TXT data we read: an mDNS packet is at most 9000 bytes (RFC 6762 §17)."""
MAX_TXT_STRINGS: Final = 64
MAX_PEER_ADDRS: Final = 16
"""Addresses kept per discovered peer; the rest are dropped."""

_NAME_ALPHABET: Final = string.ascii_lowercase + string.digits


class MdnsDecodeError(DecodeError):
    """A peer's TXT data is not a sequence of character-strings."""


class TxtTooLarge(MessageTooLarge, MdnsDecodeError):
    """A peer's TXT data exceeds ``MAX_TXT_RDATA`` bytes, or holds more than
    ``MAX_TXT_STRINGS`` strings (then ``limit`` is where the cap was hit)."""


class BadEntry(MdnsDecodeError):
    """One ``dnsaddr=`` entry cannot be used; ``reason`` is a short tag
    (``prefix``, ``utf8``, ``multiaddr``, ``no_peer``, ``undialable``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MixedPeers(MdnsDecodeError):
    """The entries of one record name more than one peer."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """What we put in our TXT record, and what did not fit."""

    entries: tuple[bytes, ...]
    """``dnsaddr=…`` strings, each at most 255 bytes."""
    skipped: tuple[str, ...]
    """Addresses left out (too long, or past the size budget)."""

    def rdata(self) -> bytes:
        return encode_txt(self.entries)


@dataclass(frozen=True, slots=True)
class Sighting:
    """One peer as a TXT record describes it."""

    peer_id: PeerId
    addrs: tuple[QuicAddr, ...]
    """Dialable QUIC addresses without ``/p2p``, in announced order."""
    ignored: int
    """Entries dropped (other transports, malformed, beyond the cap)."""


def random_peer_name(rng: random.Random) -> str:
    """32 to 63 random lower-case letters and digits: one DNS label."""
    length = rng.randint(32, 63)
    return "".join(rng.choice(_NAME_ALPHABET) for _ in range(length))


def build_announcement(peer_id: PeerId, addrs: Iterable[Multiaddr | str],
                       budget: int = MAX_TXT_ANNOUNCE) -> Announcement:
    """``dnsaddr=<addr>/p2p/<peer_id>`` for each address, in order, while
    each fits a character-string and the whole fits ``budget`` bytes."""
    entries: list[bytes] = []
    skipped: list[str] = []
    used = 0
    suffix = f"/p2p/{peer_id}"
    for addr in addrs:
        text = str(addr)
        base, _ = split_p2p(addr)
        entry = DNSADDR_PREFIX + (str(base) + suffix).encode("ascii")
        if len(entry) > MAX_TXT_STRING or used + 1 + len(entry) > budget \
                or entry in entries:
            skipped.append(text)
            continue
        entries.append(entry)
        used += 1 + len(entry)
    return Announcement(tuple(entries), tuple(skipped))


def encode_txt(entries: Sequence[bytes]) -> bytes:
    """TXT RDATA: each entry as a length-prefixed character-string."""
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_TXT_STRING:
            raise ValueError(f"a TXT string holds at most {MAX_TXT_STRING} bytes")
        out.append(len(entry))
        out += entry
    return bytes(out)


def decode_txt(rdata: bytes) -> list[bytes]:
    """Split TXT RDATA into its character-strings (empty ones dropped)."""
    if len(rdata) > MAX_TXT_RDATA:
        raise TxtTooLarge(len(rdata), MAX_TXT_RDATA)
    out: list[bytes] = []
    at = 0
    while at < len(rdata):
        length = rdata[at]
        end = at + 1 + length
        if end > len(rdata):
            raise MdnsDecodeError(
                f"TXT string at byte {at} claims {length} bytes, {len(rdata) - at - 1} remain")
        if length:
            if len(out) == MAX_TXT_STRINGS:
                raise TxtTooLarge(len(rdata), at)  # the strings so far already fill the cap
            out.append(rdata[at + 1:end])
        at = end
    return out


def _dialable(addr: QuicAddr) -> bool:
    if addr.is_dns or addr.port == 0:
        return False
    ip = ipaddress.ip_address(addr.host)
    return not (ip.is_unspecified or ip.is_multicast)


def parse_entry(entry: bytes) -> tuple[PeerId, QuicAddr]:
    """The peer and the dialable QUIC address of one ``dnsaddr=`` entry;
    raises ``BadEntry`` saying why not."""
    if not entry.startswith(DNSADDR_PREFIX):
        raise BadEntry("prefix", "not a dnsaddr= entry")
    try:
        text = entry[len(DNSADDR_PREFIX):].decode("ascii")
    except UnicodeDecodeError:
        raise BadEntry("utf8", "dnsaddr entry is not ASCII") from None
    try:
        base, peer = split_p2p(parse_multiaddr(text))
    except (InvalidMultiaddr, DecodeError) as exc:
        raise BadEntry("multiaddr", f"bad multiaddr: {exc}") from None
    if peer is None:
        raise BadEntry("no_peer", "dnsaddr entry has no /p2p/<peer id>")
    try:
        addr = parse_quic_multiaddr(base)
    except InvalidMultiaddr:
        raise BadEntry("undialable", f"not a QUIC-v1 address: {base}") from None
    if not _dialable(addr):
        raise BadEntry("undialable", f"cannot dial {base}")
    return peer, addr


def parse_txt(rdata: bytes, own: PeerId) -> Sighting | None:
    """The peer a TXT record announces, or None when it is us or names no
    dialable address.  Raises ``MdnsDecodeError``/``TxtTooLarge`` for data
    that is not TXT at all and ``MixedPeers`` when entries disagree."""
    peer: PeerId | None = None
    addrs: list[QuicAddr] = []
    ignored = 0
    for entry in decode_txt(rdata):
        try:
            entry_peer, addr = parse_entry(entry)
        except BadEntry as exc:
            if exc.reason != "prefix":
                ignored += 1
            continue
        if peer is None:
            peer = entry_peer
        elif entry_peer != peer:
            raise MixedPeers(f"TXT record names both {peer} and {entry_peer}")
        if addr in addrs:
            continue
        if len(addrs) == MAX_PEER_ADDRS:
            ignored += 1
            continue
        addrs.append(addr)
    if peer is None or peer == own or not addrs:
        return None
    return Sighting(peer, tuple(addrs), ignored)
