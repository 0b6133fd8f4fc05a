"""``/ovl/exit/1.0.0``: asking an exit node to open a TCP connection to a
host on the clear web (docs/apps.md, "Exits").  Pure: no I/O.

Client → exit, once, at the start of the stream::

    port (2 bytes, big-endian, 1..65535) ‖ host length (1 byte, 1..253) ‖ host

``host`` is a DNS name (letters, digits, ``-``, ``_``, ``.``) or an IP
address's text form (IPv6 without brackets or zone), ASCII, matched
case-insensitively.  The header is at most 256 bytes, so a decoder never
buffers more than that.

Exit → client: one status byte.  After ``OK`` the stream carries the TCP
connection's bytes both ways (EOF is a half-close, a reset a TCP reset);
after any other status the exit closes the stream.  The client may
pipeline the header behind a lazy multistream selection and send its
first bytes at once: one round trip in all.

The DHT key exits announce themselves under (as providers) is
``exit_provider_key(zone)``: the sha2-256 multihash of
``/ovl/exit/1.0.0 <zone>``, so two networks with different zones do not
mix exits.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from dataclasses import dataclass

from overlay.apps.errors import ProxyProtocolError

__all__ = [
    "EXIT_PROTOCOL",
    "ExitHeaderError",
    "ExitRequest",
    "ExitStatus",
    "MAX_HEADER",
    "MAX_HOST",
    "check_host",
    "decode_request",
    "encode_request",
    "exit_provider_key",
    "status_text",
]

EXIT_PROTOCOL = "/ovl/exit/1.0.0"
MAX_HOST = 253
MAX_HEADER = 3 + MAX_HOST
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class ExitHeaderError(ProxyProtocolError):
    """A malformed ``/ovl/exit/1.0.0`` request header."""


class ExitStatus(enum.IntEnum):
    OK = 0
    NOT_ALLOWED = 1
    """The client peer is not in the exit's allowlist."""
    PORT_REFUSED = 2
    """The destination port is not in the exit's port allowlist."""
    DESTINATION_REFUSED = 3
    """The destination is (or resolves only to) a loopback, private,
    link-local, multicast or otherwise non-global address."""
    RESOLVE_FAILED = 4
    """The exit's resolver found no address for the host."""
    UNREACHABLE = 5
    """The exit could not connect to any address of the host."""
    LIMIT = 6
    """A per-client limit (connections or bytes) or the exit's total."""
    BAD_REQUEST = 7
    """The header was malformed."""


_TEXT = {
    ExitStatus.NOT_ALLOWED: "this node is not in the exit's allowlist of clients",
    ExitStatus.PORT_REFUSED: "the exit does not open connections to that port",
    ExitStatus.DESTINATION_REFUSED: "the exit never connects to loopback, private, "
                                    "link-local, multicast or reserved addresses",
    ExitStatus.RESOLVE_FAILED: "the exit could not resolve the host",
    ExitStatus.UNREACHABLE: "the exit could not connect to the host",
    ExitStatus.LIMIT: "a limit of the exit was reached (connections or bytes per client)",
    ExitStatus.BAD_REQUEST: "the exit could not parse the request",
}


def status_text(status: int) -> str:
    """What a person reads for a refusal (an unknown byte included)."""
    try:
        return _TEXT[ExitStatus(status)]
    except (ValueError, KeyError):
        return f"the exit answered an unknown status {status}"


@dataclass(frozen=True, slots=True)
class ExitRequest:
    host: str
    """Lower-case DNS name or IP address text."""
    port: int


def check_host(host: str) -> str:
    """The host in normal form (lower case, no trailing dot, IPv6 without
    brackets); ``ValueError`` naming the rule otherwise."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.lower()
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    if not 1 <= len(host) <= MAX_HOST or not host.isascii():
        raise ValueError(f"a host has 1 to {MAX_HOST} ASCII characters")
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{host[:60]!r} is not an IPv6 address") from None
    if not set(host) <= _NAME_CHARS or ".." in host or host.startswith("."):
        raise ValueError(f"{host[:60]!r} is neither a host name nor an IP address")
    return host


def encode_request(host: str, port: int) -> bytes:
    if not 0 < port < 65536:
        raise ValueError("port must be 1 to 65535")
    raw = check_host(host).encode("ascii")
    return port.to_bytes(2, "big") + bytes((len(raw),)) + raw


def decode_request(data: bytes) -> tuple[ExitRequest, int] | None:
    """The request and the bytes it used, or None while incomplete (never
    beyond ``MAX_HEADER`` bytes); raises ``ExitHeaderError``."""
    if len(data) < 3:
        return None
    port = int.from_bytes(data[:2], "big")
    length = data[2]
    if port == 0:
        raise ExitHeaderError("port 0")
    if not 1 <= length <= MAX_HOST:
        raise ExitHeaderError(f"host length outside 1..{MAX_HOST}")
    if len(data) < 3 + length:
        return None
    try:
        host = check_host(data[3:3 + length].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ExitHeaderError(f"bad host: {exc}") from None
    return ExitRequest(host, port), 3 + length


def exit_provider_key(zone: str) -> bytes:
    """The well-known DHT key exits provide (a sha2-256 multihash)."""
    digest = hashlib.sha256(f"{EXIT_PROTOCOL} {zone}".encode()).digest()
    return bytes((0x12, 0x20)) + digest
