"""Trust-on-first-use owner memory of a resolver (pure), as SSH keeps
host keys.

The first valid record seen for a name pins its owner until that record
expires (extended by later records of the same owner).  A record of another
owner before then raises ``OwnerChanged``, unless it carries a transfer proof
from the pinned owner, or the pinned owner itself published a TRANSFER (the
pin moves to the new owner) or a RELEASE (the pin is dropped).

A resolver may never see the release: the next owner's record replaces it
at the storage nodes.  That owner therefore carries the RELEASE as its
``release_proof``; it lets the new owner in when it was signed by the
pinned owner at a higher sequence than any record of that owner the pin
saw (so a release that the owner later took back by registering again
does not unlock the pin).  Records must have passed ``validate`` first;
this module trusts their signatures.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from overlay.naming.errors import CorruptState, OwnerChanged, RecordRejected
from overlay.naming.policy import released_by
from overlay.naming.record import NameRecord, RecordKind, decode_record

__all__ = ["Pin", "OwnerPins", "PINS_FORMAT", "PINS_VERSION", "released_from",
           "transferred_from"]

PINS_FORMAT = "overlay-name-pins"
PINS_VERSION = 1


@dataclass(frozen=True, slots=True)
class Pin:
    owner: bytes
    """PublicKey protobuf of the pinned owner."""
    pinned_until: int
    """Unix seconds; after this any owner is accepted again."""
    sequence: int = 0
    """Highest sequence seen from the pinned owner (a release proof must
    exceed it)."""


class OwnerPins:
    """Name → pinned owner, bounded in size."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._pins: dict[str, Pin] = {}

    def __len__(self) -> int:
        return len(self._pins)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._pins))

    def get(self, name: str) -> Pin | None:
        return self._pins.get(name)

    def forget(self, name: str) -> None:
        """Drop a pin on the user's explicit request (like ssh-keygen -R)."""
        self._pins.pop(name, None)

    def check(self, record: NameRecord, now: float) -> None:
        """Raise ``OwnerChanged`` if ``record`` contradicts a live pin."""
        pin = self._pins.get(record.name)
        if pin is None or pin.pinned_until <= now or record.owner == pin.owner:
            return
        if transferred_from(record) == pin.owner:
            return
        if released_from(record, pin.sequence) == pin.owner:
            return
        raise OwnerChanged(record.name, pin.owner, record.owner, pin.pinned_until)

    def observe(self, record: NameRecord, now: float) -> None:
        """Check ``record`` and update the pin it implies."""
        self.check(record, now)
        pin = self._pins.get(record.name)
        if record.kind is RecordKind.RELEASE:
            self._pins.pop(record.name, None)
            return
        if record.kind is RecordKind.TRANSFER:
            self._pins[record.name] = Pin(record.new_owner, record.expires)
        elif pin is not None and pin.owner == record.owner and pin.pinned_until > now:
            self._pins[record.name] = Pin(pin.owner, max(pin.pinned_until, record.expires),
                                          max(pin.sequence, record.sequence))
        else:
            self._pins[record.name] = Pin(record.owner, record.expires, record.sequence)
        self._evict(now)

    def _evict(self, now: float) -> None:
        if len(self._pins) <= self.max_entries:
            return
        for name in [n for n, p in self._pins.items() if p.pinned_until <= now]:
            del self._pins[name]
        excess = len(self._pins) - self.max_entries
        if excess > 0:
            # Pins closest to expiry protect the least; drop those first.
            for name in sorted(self._pins, key=lambda n: self._pins[n].pinned_until)[:excess]:
                del self._pins[name]

    # --- persistence (the file adapter is overlay.naming.store) ------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PINS_FORMAT,
            "version": PINS_VERSION,
            "pins": {
                name: {
                    "owner": base64.b64encode(pin.owner).decode("ascii"),
                    "pinned_until": pin.pinned_until,
                    "sequence": pin.sequence,
                }
                for name, pin in sorted(self._pins.items())
            },
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], max_entries: int = 10_000) -> OwnerPins:
        if doc.get("format") != PINS_FORMAT:
            raise CorruptState("not an owner-pins file")
        if doc.get("version") != PINS_VERSION:
            raise CorruptState(f"owner-pins version {doc.get('version')!r} is not supported")
        entries = doc.get("pins")
        if not isinstance(entries, dict):
            raise CorruptState("owner-pins file lacks its pins")
        pins = cls(max_entries)
        for name, entry in entries.items():
            try:
                owner = base64.b64decode(entry["owner"], validate=True)
                until = entry["pinned_until"]
                # Files written before release proofs have no sequence.
                sequence = entry.get("sequence", 0)
            except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
                raise CorruptState(f"bad pin for {name!r}: {exc}") from None
            if (not isinstance(name, str) or not isinstance(until, int)
                    or isinstance(until, bool) or not isinstance(sequence, int)
                    or isinstance(sequence, bool) or sequence < 0):
                raise CorruptState(f"bad pin for {name!r}")
            pins._pins[name] = Pin(owner, until, sequence)
        return pins


def transferred_from(record: NameRecord) -> bytes | None:
    """The owner that handed the name to ``record``'s owner, if proven."""
    if not record.transfer_proof:
        return None
    try:
        proof = decode_record(record.transfer_proof)
    except RecordRejected:
        return None
    if proof.kind is not RecordKind.TRANSFER or proof.new_owner != record.owner:
        return None
    return proof.owner


def released_from(record: NameRecord, after: int = -1) -> bytes | None:
    """The previous owner whose RELEASE ``record`` carries, if that release
    has a sequence above ``after``."""
    proof = released_by(record)
    if proof is None or proof.sequence <= after or proof.owner == record.owner:
        return None
    return proof.owner
