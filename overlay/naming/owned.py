"""The names this node owns, persisted so a restarted daemon keeps them.

One versioned JSON file (``owned-names.json``, mode 0600, atomic writes,
in the ``overlay.statefile`` envelope and written by the service's
``StateWriter`` from a worker thread)
maps each name to the latest record this node published for it and when it
must be republished.  The record carries everything needed to make the
next one: the proof-of-work nonce, the transfer proof and the targets.
On load, records are decoded and their signature and owner are checked
(the file is not trusted); expiry is not checked, because an owner that
was offline past its expiry still wants its name back if it is free.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay import statefile
from overlay.fsutil import atomic_write
from overlay.naming.config import NamingConfig
from overlay.naming.errors import CorruptState, RecordRejected
from overlay.naming.record import NameRecord, decode_record
from overlay.naming.validate import check_structure, parse_owner_key
from overlay.statefile import encode_state, read_state

__all__ = ["OWNED_FILE", "OWNED_FORMAT", "OWNED_VERSION", "OwnedName", "load_owned",
           "owned_body", "save_owned"]

OWNED_FILE = "owned-names.json"
OWNED_FORMAT = "overlay-owned-names"
OWNED_VERSION = 1
_MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OwnedName:
    record: NameRecord
    """The latest record published for the name."""
    self_target: bool
    """The record points at this node: refresh its addresses on republish."""
    published_at: float
    """Unix time of the last successful publication (0: never)."""
    republish_at: float
    """Unix time the next publication is due."""
    stored: int = 0
    """Storage nodes that accepted the last publication."""


def owned_body(names: dict[str, OwnedName]) -> dict[str, Any]:
    """The file's body (inside the ``overlay.statefile`` envelope)."""
    return {
        "names": {
            name: {
                "record": base64.b64encode(entry.record.to_bytes()).decode("ascii"),
                "self_target": entry.self_target,
                "published_at": entry.published_at,
                "republish_at": entry.republish_at,
                "stored": entry.stored,
            }
            for name, entry in sorted(names.items())
        },
    }


def save_owned(path: Path, names: dict[str, OwnedName]) -> None:
    atomic_write(path, encode_state(OWNED_FORMAT, OWNED_VERSION, owned_body(names)), 0o600)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CorruptState(f"owned names: `{what}` is not a number")
    return float(value)


def load_owned(path: Path, owner: bytes, naming: NamingConfig) -> dict[str, OwnedName]:
    """The owned names in ``path`` (empty if missing); raises ``CorruptState``."""
    try:
        found = read_state(path, OWNED_FORMAT, (OWNED_VERSION,), _MAX_FILE_BYTES)
    except statefile.CorruptState as exc:
        raise CorruptState(str(exc)) from None
    if found is None:
        return {}
    doc = found[1]
    entries = doc.get("names")
    if not isinstance(entries, dict):
        raise CorruptState(f"{path} lacks its names")
    out: dict[str, OwnedName] = {}
    for name, item in entries.items():
        if not isinstance(item, dict):
            raise CorruptState(f"{path}: bad entry for {name!r}")
        try:
            raw = base64.b64decode(item["record"], validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise CorruptState(f"{path}: bad record for {name!r}: {exc}") from None
        try:
            record = decode_record(raw, naming.max_record_bytes)
            check_structure(record, naming)
            owner_key = parse_owner_key(record.owner)
        except RecordRejected as exc:
            raise CorruptState(f"{path}: record for {name!r} is invalid: {exc}") from None
        if record.name != name or record.owner != owner or not owner_key.verify(
            record.signing_bytes(), record.signature
        ):
            raise CorruptState(f"{path}: record for {name!r} is not ours or not signed")
        self_target = item.get("self_target", False)
        if not isinstance(self_target, bool):
            raise CorruptState(f"{path}: `self_target` of {name!r} is not a boolean")
        stored = item.get("stored", 0)
        out[name] = OwnedName(
            record,
            self_target,
            _number(item.get("published_at", 0.0), "published_at"),
            _number(item.get("republish_at", 0.0), "republish_at"),
            int(_number(stored, "stored")),
        )
    return out


def owned_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / OWNED_FILE
