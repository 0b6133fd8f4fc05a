"""Peer discovery on the LAN with libp2p mDNS (``_p2p._udp.local``, TXT
``dnsaddr=`` records): pure records and table, a zeroconf driver, and the
daemon extension (docs/mdns.md)."""

from overlay.mdns.config import MdnsConfig, mdns_addresses
from overlay.mdns.records import (
    DNSADDR_PREFIX,
    MAX_PEER_ADDRS,
    MAX_TXT_ANNOUNCE,
    MAX_TXT_RDATA,
    MAX_TXT_STRING,
    MAX_TXT_STRINGS,
    SERVICE_TYPE,
    Announcement,
    BadEntry,
    MdnsDecodeError,
    MixedPeers,
    Sighting,
    TxtTooLarge,
    build_announcement,
    decode_txt,
    encode_txt,
    parse_entry,
    parse_txt,
    random_peer_name,
)
from overlay.mdns.table import DiscoveredPeer, DiscoveredPeers, TableConfig

__all__ = [
    "DNSADDR_PREFIX",
    "MAX_PEER_ADDRS",
    "MAX_TXT_ANNOUNCE",
    "MAX_TXT_RDATA",
    "MAX_TXT_STRING",
    "MAX_TXT_STRINGS",
    "SERVICE_TYPE",
    "Announcement",
    "BadEntry",
    "DiscoveredPeer",
    "DiscoveredPeers",
    "MdnsConfig",
    "MdnsDecodeError",
    "MixedPeers",
    "Sighting",
    "TableConfig",
    "TxtTooLarge",
    "build_announcement",
    "decode_txt",
    "encode_txt",
    "mdns_addresses",
    "parse_entry",
    "parse_txt",
    "random_peer_name",
]
