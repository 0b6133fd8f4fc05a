"""Name normalization, as DNS does it, plus self-certifying names.

A name is normalized to its ASCII (A-label) form: lower case, IDNA 2008 with
the UTS-46 mapping for non-ASCII input, letters/digits/hyphens only, labels
of 1..63 bytes and at most 253 bytes in all, no trailing dot, ending in the
zone (``ovl`` by default).  Two spellings of a name normalize to the same
string, so records, DHT keys and pins all use the normalized form.

A self-certifying name is ``<peer ID as base36 CIDv1>.<zone>`` (``k51…``
for Ed25519 keys, 63 characters, which is why base36 is used: base32 would
not fit a DNS label).  Names below it (``www.k51….ovl``) belong to the same
key.  Only that key can publish them, so no storage node has to trust
first-come-first-served for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

from overlay.errors import InvalidPeerId
from overlay.identity import PeerId
from overlay.naming.errors import InvalidName

__all__ = [
    "DEFAULT_ZONE",
    "MAX_LABEL_BYTES",
    "MAX_NAME_BYTES",
    "ParsedName",
    "normalize",
    "normalize_hostname",
    "parse_name",
    "self_certifying_name",
    "to_unicode",
]

DEFAULT_ZONE = "ovl"
MAX_LABEL_BYTES = 63
MAX_NAME_BYTES = 253
# Bounds the work spent on hostile input before any rule is checked; the
# UTS-46 mapping can shrink text (ignored code points), so allow slack.
_MAX_INPUT_CHARS = 1024
_LDH = re.compile(r"[a-z0-9-]+")
# base36 CIDv1 of a libp2p-key: 'k' prefix; the shortest (sha2-256 digest)
# is ~55 characters, so shorter labels skip the parse attempt.
_MIN_CID_LABEL = 50


@dataclass(frozen=True, slots=True)
class ParsedName:
    """A normalized name split into its parts."""

    name: str
    """The normalized A-label form, zone included, no trailing dot."""
    labels: tuple[str, ...]
    """All labels, leftmost first, zone labels included."""
    zone: str
    """The zone the name was parsed under (normalized)."""
    owner_peer: PeerId | None
    """For a self-certifying name, the only peer allowed to publish it."""

    @property
    def is_self_certifying(self) -> bool:
        return self.owner_peer is not None


def _check_label(label: str, original: str) -> str:
    """Validate one label and return its A-label form."""
    if not label:
        raise InvalidName("empty-label", original, "a name may not contain an empty label")
    if not label.isascii():
        try:
            label = idna.alabel(label).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidName("idna", original, f"label {label!r}: {exc}") from None
    elif label.startswith("xn--"):
        # An A-label must round-trip, or two spellings would name one thing.
        try:
            if idna.alabel(idna.ulabel(label)).decode("ascii") != label:
                raise InvalidName("idna", original, f"label {label!r} is not a canonical A-label")
        except idna.IDNAError as exc:
            raise InvalidName("idna", original, f"label {label!r}: {exc}") from None
    if len(label) > MAX_LABEL_BYTES:
        raise InvalidName(
            "label-length",
            original,
            f"label {label[:20]!r}… is {len(label)} bytes, more than {MAX_LABEL_BYTES}",
        )
    if not _LDH.fullmatch(label):
        raise InvalidName(
            "ldh", original, f"label {label!r} has characters other than letters, digits, hyphen"
        )
    if label.startswith("-") or label.endswith("-"):
        raise InvalidName("hyphen", original, f"label {label!r} starts or ends with a hyphen")
    if label[2:4] == "--" and not label.startswith("xn--"):
        raise InvalidName(
            "reserved-hyphens", original, f"label {label!r} has '--' in positions 3-4"
        )
    return label


def normalize_hostname(text: str) -> str:
    """Normalize any DNS host name (no zone requirement); used for SRV
    targets that may point outside the zone."""
    if not isinstance(text, str) or not text:
        raise InvalidName("empty", str(text), "the name is empty")
    if len(text) > _MAX_INPUT_CHARS:
        raise InvalidName("name-length", text[:40] + "…", f"{len(text)} characters in input")
    mapped = text
    if text.isascii():
        mapped = text.lower()
    else:
        try:
            # Non-transitional processing, as IDNA 2008 browsers do (ß stays ß).
            mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise InvalidName("idna", text, str(exc)) from None
    if mapped.endswith("."):
        mapped = mapped[:-1]
    if not mapped:
        raise InvalidName("empty", text, "the name is empty")
    labels = [_check_label(label, text) for label in mapped.split(".")]
    result = ".".join(labels)
    if len(result) > MAX_NAME_BYTES:
        raise InvalidName(
            "name-length", text, f"{len(result)} bytes in all, more than {MAX_NAME_BYTES}"
        )
    return result


def _owner_peer(label: str, original: str) -> PeerId | None:
    if len(label) < _MIN_CID_LABEL or label[0] not in "kb":
        return None
    try:
        peer = PeerId.from_string(label)
    except (InvalidPeerId, ValueError):
        return None
    canonical = peer.to_cid(base="base36")
    if label != canonical:
        raise InvalidName(
            "self-certifying-form", original, "a peer ID label must be its base36 CIDv1 form"
        )
    return peer


def parse_name(text: str, zone: str = DEFAULT_ZONE) -> ParsedName:
    """Normalize ``text`` and check that it lies strictly inside ``zone``."""
    zone_norm = normalize_hostname(zone)
    name = normalize_hostname(text)
    if not name.endswith("." + zone_norm):
        raise InvalidName("zone", text, f"the name is not under the zone .{zone_norm}")
    labels = tuple(name.split("."))
    inner = labels[: len(labels) - zone_norm.count(".") - 1]
    owner = _owner_peer(inner[-1], text)
    return ParsedName(name=name, labels=labels, zone=zone_norm, owner_peer=owner)


def normalize(text: str, zone: str = DEFAULT_ZONE) -> str:
    """The normalized form of ``text``; raises ``InvalidName(rule=…)``."""
    return parse_name(text, zone).name


def self_certifying_name(peer: PeerId, zone: str = DEFAULT_ZONE) -> str:
    """The name only ``peer`` can publish."""
    return f"{peer.to_cid(base='base36')}.{normalize_hostname(zone)}"


def to_unicode(name: str) -> str:
    """Display form: A-labels turned back into Unicode where possible."""
    out = []
    for label in name.split("."):
        if label.startswith("xn--"):
            try:
                label = idna.ulabel(label)
            except idna.IDNAError:
                pass
        out.append(label)
    return ".".join(out)
