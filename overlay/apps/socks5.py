"""SOCKS5 (RFC 1928) as pure functions: the greeting, the CONNECT request
and replies.  No I/O; each parser takes the bytes received so far and
returns ``None`` while more are needed, or the message and how many bytes
it used.  Only "no authentication" and CONNECT are served: a proxy on a
loopback port needs neither BIND nor UDP ASSOCIATE for browsers and curl.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from overlay.apps.errors import SocksError

__all__ = [
    "ATYP_DOMAIN",
    "ATYP_IPV4",
    "ATYP_IPV6",
    "CMD_CONNECT",
    "NO_AUTH",
    "NO_ACCEPTABLE",
    "SOCKS_VERSION",
    "ConnectRequest",
    "Greeting",
    "Reply",
    "encode_method_choice",
    "encode_reply",
    "parse_greeting",
    "parse_request",
]

SOCKS_VERSION = 5
NO_AUTH = 0x00
NO_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04


class Reply(enum.IntEnum):
    """RFC 1928 section 6 reply codes."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


@dataclass(frozen=True, slots=True)
class Greeting:
    methods: tuple[int, ...]
    """Authentication methods the client offers."""

    @property
    def accepts_no_auth(self) -> bool:
        return NO_AUTH in self.methods


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    host: str
    """A domain name as sent (ASCII), or an IP address's text form."""
    port: int
    is_domain: bool
    """The client left name resolution to us (``socks5h``)."""


def parse_greeting(data: bytes) -> tuple[Greeting, int] | None:
    """``VER NMETHODS METHODS…``; raises ``SocksError`` for another version
    or no methods."""
    if not data:
        return None
    if data[0] != SOCKS_VERSION:
        raise SocksError(f"not SOCKS5 (version byte {data[0]})")
    if len(data) < 2:
        return None
    count = data[1]
    if count == 0:
        raise SocksError("the greeting offers no authentication method")
    if len(data) < 2 + count:
        return None
    return Greeting(tuple(data[2:2 + count])), 2 + count


def encode_method_choice(method: int) -> bytes:
    return bytes((SOCKS_VERSION, method))


def parse_request(data: bytes) -> tuple[ConnectRequest, int] | None:
    """``VER CMD RSV ATYP DST.ADDR DST.PORT``.  A command other than CONNECT
    or an unknown address type raises ``SocksError`` carrying the reply code
    to send (the client waits for one)."""
    if len(data) < 4:
        if data and data[0] != SOCKS_VERSION:
            raise SocksError(f"not SOCKS5 (version byte {data[0]})")
        return None
    version, command, reserved, atyp = data[0], data[1], data[2], data[3]
    if version != SOCKS_VERSION:
        raise SocksError(f"not SOCKS5 (version byte {version})")
    if reserved != 0:
        raise SocksError("the reserved byte of the request is not zero", Reply.GENERAL_FAILURE)
    if atyp == ATYP_IPV4:
        end = 4 + 4
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv4Address(data[4:end]))
        is_domain = False
    elif atyp == ATYP_IPV6:
        end = 4 + 16
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv6Address(data[4:end]))
        is_domain = False
    elif atyp == ATYP_DOMAIN:
        if len(data) < 5:
            return None
        length = data[4]
        if length == 0:
            raise SocksError("empty domain name", Reply.HOST_UNREACHABLE)
        end = 5 + length
        if len(data) < end + 2:
            return None
        raw = data[5:end]
        if not all(0x21 <= b < 0x7F for b in raw):
            raise SocksError("the domain name is not printable ASCII", Reply.HOST_UNREACHABLE)
        host = raw.decode("ascii")
        is_domain = True
    else:
        raise SocksError(f"unknown address type {atyp}", Reply.ADDRESS_TYPE_NOT_SUPPORTED)
    if command != CMD_CONNECT:
        raise SocksError(f"command {command} is not supported (only CONNECT)",
                         Reply.COMMAND_NOT_SUPPORTED)
    port = int.from_bytes(data[end:end + 2], "big")
    if port == 0:
        raise SocksError("port 0", Reply.HOST_UNREACHABLE)
    return ConnectRequest(host, port, is_domain), end + 2


def encode_reply(reply: Reply, bound: tuple[str, int] = ("0.0.0.0", 0)) -> bytes:
    """``VER REP RSV ATYP BND.ADDR BND.PORT``; the bound address is ours
    for CONNECT (clients ignore it; a failed reply sends zeros)."""
    address = ipaddress.ip_address(bound[0])
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return (bytes((SOCKS_VERSION, int(reply), 0, atyp)) + address.packed
            + bound[1].to_bytes(2, "big"))
