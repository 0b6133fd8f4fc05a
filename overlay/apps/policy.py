"""Pure decisions of the application layer: which service a ``NAME:PORT``
means, who may use an exposed service, and how a failure reads in SOCKS5
and HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from overlay.apps.errors import Reason, TargetError
from overlay.apps.socks5 import Reply
from overlay.naming.record import Service

__all__ = [
    "HTTP_PORT",
    "HTTP_SERVICE",
    "http_status_for",
    "is_allowed",
    "service_for_port",
    "socks_reply_for",
]

HTTP_SERVICE = "http"
HTTP_PORT = 80


def service_for_port(name: str, port: int, services: Sequence[Service]) -> str:
    """The service ``name:port`` reaches: port 80 is ``http`` (what a
    browser asks for ``http://alice.ovl/``), any other port the service the
    record publishes with that port.  Raises ``TargetError(NOT_EXPOSED)``
    listing what the name does publish."""
    if port == HTTP_PORT:
        return HTTP_SERVICE
    for service in services:
        if service.port == port and not service.target:
            return service.protocol
    published = ", ".join(f"{s.protocol}:{s.port}" for s in services) or "none"
    raise TargetError(Reason.NOT_EXPOSED,
                      f"{name} exposes no service on port {port} (published: {published})")


def is_allowed(allow: Sequence[str], remote: str, resolved: Iterable[str]) -> bool:
    """An empty allowlist is open; otherwise the remote peer ID must be
    listed, or be one of the peers the listed names resolved to
    (``resolved``, peer ID strings)."""
    if not allow:
        return True
    return remote in allow or remote in set(resolved)


_SOCKS = {
    Reason.UNKNOWN_NAME: Reply.HOST_UNREACHABLE,
    Reason.BAD_TARGET: Reply.HOST_UNREACHABLE,
    Reason.PEER_OFFLINE: Reply.NETWORK_UNREACHABLE,
    Reason.RESOLVE_FAILED: Reply.NETWORK_UNREACHABLE,
    Reason.NOT_EXPOSED: Reply.CONNECTION_REFUSED,
    Reason.UNREACHABLE: Reply.CONNECTION_REFUSED,
    Reason.REFUSED: Reply.NOT_ALLOWED,
}

_HTTP = {
    Reason.UNKNOWN_NAME: 502,
    Reason.NOT_EXPOSED: 502,
    Reason.UNREACHABLE: 502,
    Reason.PEER_OFFLINE: 504,
    Reason.RESOLVE_FAILED: 504,
    Reason.REFUSED: 403,
    Reason.BAD_TARGET: 400,
}


def socks_reply_for(reason: Reason) -> Reply:
    return _SOCKS[reason]


def http_status_for(reason: Reason) -> int:
    return _HTTP[reason]
