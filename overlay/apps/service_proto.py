"""``/ovl/tcp/1.0.0``: one protocol for every exposed TCP service.

One protocol ID with the service name in a small header (rather than one
protocol ID per service) keeps identify short whatever a node exposes,
lets a refusal say *why* (not exposed, not allowed, the local port is
down) instead of a bare "protocol not supported", and hides the list of
services from peers that merely identify us.

Opener → exposer: ``uvarint(len) ‖ service name`` (1-63 bytes of
``[a-z0-9-_.]``).  Exposer → opener: one status byte; after ``OK`` the
stream carries the TCP connection's bytes both ways, with EOF as
half-close and a reset as a TCP reset.  Any other status is followed by
the exposer closing the stream.  The opener may pipeline the header with
a lazy multistream selection: one round trip in all.
"""

from __future__ import annotations

import enum

from overlay.apps.errors import Reason, ServiceHeaderError
from overlay.wire.varint import encode_uvarint

__all__ = [
    "MAX_SERVICE_NAME",
    "SERVICE_PROTOCOL",
    "Status",
    "check_service_name",
    "decode_header",
    "encode_header",
    "status_reason",
]

SERVICE_PROTOCOL = "/ovl/tcp/1.0.0"
MAX_SERVICE_NAME = 63
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class Status(enum.IntEnum):
    OK = 0
    NOT_EXPOSED = 1
    REFUSED = 2
    UNREACHABLE = 3


def status_reason(status: Status) -> Reason:
    return {Status.NOT_EXPOSED: Reason.NOT_EXPOSED, Status.REFUSED: Reason.REFUSED,
            Status.UNREACHABLE: Reason.UNREACHABLE}[status]


def check_service_name(name: str) -> str:
    """The name itself if valid; ``ValueError`` naming the rule otherwise."""
    if not 1 <= len(name) <= MAX_SERVICE_NAME:
        raise ValueError(f"a service name has 1 to {MAX_SERVICE_NAME} characters")
    if not set(name) <= _ALLOWED:
        raise ValueError(f"service name {name!r}: use lower-case letters, digits, '-', '_', '.'")
    if ":" in name:  # excluded above; the record's PROTO:PORT form depends on it
        raise ValueError("no ':' in a service name")
    return name


def encode_header(service: str) -> bytes:
    raw = check_service_name(service).encode("ascii")
    return encode_uvarint(len(raw)) + raw


def decode_header(data: bytes) -> tuple[str, int] | None:
    """The service name and bytes used, or None while incomplete; raises
    ``ServiceHeaderError`` for an over-long or malformed name.  Names are
    shorter than 128 bytes, so the uvarint length is one byte."""
    if not data:
        return None
    length = data[0]
    if not 1 <= length <= MAX_SERVICE_NAME:
        raise ServiceHeaderError(f"service name length outside 1..{MAX_SERVICE_NAME}")
    if len(data) < 1 + length:
        return None
    try:
        name = check_service_name(data[1:1 + length].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ServiceHeaderError(f"bad service name: {exc}") from None
    return name, 1 + length
