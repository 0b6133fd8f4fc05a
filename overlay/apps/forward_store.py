"""``<home>/forwards.json``: the forwards a restarted daemon opens again.

A forward is a promise to local programs ("port 9000 is alice's http"), so
it outlives the daemon like an exposure does.  The file holds the bound
address (a forward asked for on port 0 keeps the port it got, so clients
configured with it still work after a restart) and the ``NAME:SERVICE``
target; it is written atomically by a ``StateWriter`` (``Snapshot``) and
read with a size limit.  Decoding is pure: bad entries are reported and
skipped, so one hand-edited line does not cost the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlay.statefile import CorruptState, read_state

__all__ = ["FORWARDS_FILE", "FORWARDS_FORMAT", "FORWARDS_VERSION", "MAX_FORWARDS_BYTES",
           "SavedForward", "forwards_body", "load_forwards", "parse_forwards"]

FORWARDS_FILE = "forwards.json"
FORWARDS_FORMAT = "overlay-forwards"
FORWARDS_VERSION = 1
MAX_FORWARDS_BYTES = 256 * 1024
"""256 forwards at most, each well under 1 KiB."""


@dataclass(frozen=True, slots=True)
class SavedForward:
    listen: str
    """``HOST:PORT`` as bound (``[V6]:PORT`` for IPv6)."""
    target: str
    """``NAME:SERVICE``."""


def forwards_body(forwards: Iterable[SavedForward]) -> dict[str, Any]:
    return {"forwards": [{"listen": f.listen, "target": f.target} for f in forwards]}


def parse_forwards(doc: dict[str, Any], limit: int) -> tuple[list[SavedForward], list[str]]:
    """The saved forwards (at most ``limit``, duplicates of a listen address
    dropped) and a description of each entry that was skipped."""
    entries = doc.get("forwards")
    if not isinstance(entries, list):
        raise CorruptState(f"{FORWARDS_FILE}: `forwards` is not a list")
    out: list[SavedForward] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            skipped.append(f"{entry!r}: not an object")
            continue
        listen, target = entry.get("listen"), entry.get("target")
        if not isinstance(listen, str) or not isinstance(target, str):
            skipped.append(f"{entry!r}: `listen` and `target` must be strings")
        elif listen in seen:
            skipped.append(f"{listen}: listed twice")
        elif len(out) >= limit:
            skipped.append(f"{listen}: over the limit of {limit} forwards")
        else:
            seen.add(listen)
            out.append(SavedForward(listen, target))
    return out, skipped


def load_forwards(path: Path, limit: int) -> tuple[list[SavedForward], list[str]]:
    """``parse_forwards`` of the file; nothing if it does not exist.  Raises
    ``CorruptState``."""
    found = read_state(path, FORWARDS_FORMAT, (FORWARDS_VERSION,), MAX_FORWARDS_BYTES)
    if found is None:
        return [], []
    return parse_forwards(found[1], limit)
