"""Configuration of the STUN service, and the ``HOST:PORT`` server syntax."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from overlay.nat.agent import AgentConfig
from overlay.nat.errors import InvalidStunServer

__all__ = ["StunServiceConfig", "parse_stun_server", "MAX_STUN_SERVERS"]

MAX_STUN_SERVERS = 16
_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


def parse_stun_server(text: str) -> tuple[str, int]:
    """``203.0.113.10:3478``, ``[2001:db8::1]:3478`` or ``stun.example:3478``
    to ``(host, port)``; raises ``InvalidStunServer`` saying what is wrong."""
    if not isinstance(text, str):
        raise InvalidStunServer(f"a STUN server must be HOST:PORT text, not {text!r}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise InvalidStunServer(f"{text!r}: write an IPv6 server as [ADDR]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidStunServer(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise InvalidStunServer(f"{text!r} is not HOST:PORT (e.g. 203.0.113.10:3478)")
        if ":" in host:
            raise InvalidStunServer(f"{text!r}: write an IPv6 server as [ADDR]:PORT")
        if not _HOSTNAME.fullmatch(host):
            raise InvalidStunServer(f"{text!r}: {host!r} is neither an IP address nor a host name")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidStunServer(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class StunServiceConfig:
    servers: tuple[str, ...] = ()
    """STUN servers as ``HOST:PORT``; any introducer's QUIC port is one."""
    serve: bool = False
    """Answer binding requests on the node's QUIC sockets (introducers)."""
    refresh_interval: float = 600.0
    """Seconds between rounds of binding requests; a mapping can change
    when a NAT reboots or an idle mapping expires, and connections learn
    of it through identify in between."""
    filtering_tests: bool = True
    """Run RFC 5780 tests against servers that announce OTHER-ADDRESS."""
    agent: AgentConfig = field(default_factory=AgentConfig)

    def __post_init__(self) -> None:
        if len(self.servers) > MAX_STUN_SERVERS:
            raise ValueError(f"at most {MAX_STUN_SERVERS} STUN servers, not {len(self.servers)}")
        for server in self.servers:
            parse_stun_server(server)
        if not self.refresh_interval >= 1:
            raise ValueError("refresh_interval must be at least 1 second")
