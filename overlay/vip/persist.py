"""The IPv4 table on disk, so a restart keeps every peer's vIPv4.

Programs cache A records (resolvers, ``/etc/hosts``, open connections), so
a peer renumbered by a restart would be reached at another peer's address.
The file ``<home>/vip4.json`` is a versioned ``overlay.statefile``
document: ``{"format": "overlay-vip4", "version": 1, "entries": [[peer ID,
"100.64.x.y"], …]}``, least recently used first.  It is read (size-limited,
in a worker thread) when ``--tun`` starts and rewritten atomically by a
``StateWriter`` when a peer gets or loses an address.  The encoding and the
checks here are pure; only ``load_table`` reads the disk.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

from overlay.errors import DecodeError
from overlay.identity import PeerId
from overlay.statefile import CorruptState, read_state, remove_stale_tmp
from overlay.vip.addressing import V4_NETWORK

__all__ = ["TABLE_FILE", "TABLE_FORMAT", "TABLE_VERSION", "MAX_TABLE_BYTES",
           "table_body", "decode_table", "load_table"]

log = logging.getLogger(__name__)

TABLE_FILE = "vip4.json"
TABLE_FORMAT = "overlay-vip4"
TABLE_VERSION = 1
MAX_ENTRIES = 65536
"""Entries read at most (the allocator keeps its own, smaller, limit)."""
MAX_TABLE_BYTES = 8 << 20
"""A full table (4096 peers) is about 350 KB; anything far larger is not ours."""


def table_body(entries: list[tuple[PeerId, int]]) -> dict[str, Any]:
    """The document body for ``Ipv4Allocator.entries()``."""
    return {"entries": [[str(peer), str(ipaddress.IPv4Address(address))]
                        for peer, address in entries]}


def decode_table(doc: dict[str, Any]) -> list[tuple[PeerId, int]]:
    """The entries of a document; raises ``CorruptState`` for a malformed
    one (entries are all-or-nothing: a table half read would hand a cached
    address to another peer)."""
    raw = doc.get("entries")
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise CorruptState(f"the vIPv4 table's entries are not a list of at most {MAX_ENTRIES}")
    out: list[tuple[PeerId, int]] = []
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(field, str) for field in item)):
            raise CorruptState(f"bad vIPv4 table entry {str(item)[:80]!r}")
        try:
            peer = PeerId.from_string(item[0])
            address = ipaddress.IPv4Address(item[1])
        except (DecodeError, ValueError) as exc:
            raise CorruptState(f"bad vIPv4 table entry {str(item)[:80]!r}: {exc}") from None
        if address not in V4_NETWORK:
            raise CorruptState(f"{address} is outside {V4_NETWORK}")
        out.append((peer, int(address)))
    return out


def load_table(directory: Path) -> list[tuple[PeerId, int]]:
    """The saved table of ``directory`` (blocking: call it in a thread).
    An unreadable file is logged and treated as empty, so the daemon still
    starts; the next change replaces it."""
    remove_stale_tmp(directory, (TABLE_FILE,))
    path = directory / TABLE_FILE
    try:
        found = read_state(path, TABLE_FORMAT, (TABLE_VERSION,), MAX_TABLE_BYTES)
        return [] if found is None else decode_table(found[1])
    except CorruptState as exc:
        log.warning("ignoring the saved vIPv4 table: %s", exc)
        return []
