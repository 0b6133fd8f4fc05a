"""HTTP proxy requests as pure functions: the request head (request line
and headers, with a size limit), CONNECT targets, absolute-form URLs for
plain HTTP, the head forwarded to the origin, error pages and the PAC file.

No I/O.  ``parse_head`` takes the bytes received so far and returns
``None`` until the blank line that ends the head has arrived.
"""

from __future__ import annotations

import html
import ipaddress
from dataclasses import dataclass, replace

from overlay.apps.errors import HeadTooLarge, HttpRequestError

__all__ = [
    "MAX_HEAD_BYTES",
    "MAX_HEADERS",
    "HttpRequest",
    "Target",
    "error_response",
    "origin_head",
    "pac_file",
    "parse_authority",
    "parse_head",
    "simple_response",
]

MAX_HEAD_BYTES = 16384
"""Request line plus headers; browsers stay far below (cookies included)."""
MAX_HEADERS = 100

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                         "proxy-authenticate", "te", "trailer", "upgrade"})
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 431: "Request Header Fields Too Large",
            502: "Bad Gateway", 504: "Gateway Timeout"}


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    """Lower-cased host name or IP address text (no brackets)."""
    port: int


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    """The request target as sent."""
    version: str
    headers: tuple[tuple[str, str], ...]
    """In order, names as sent."""
    connect: Target | None = None
    """CONNECT's authority."""
    url: Target | None = None
    """An absolute-form ``http://`` URL's host and port."""
    path: str = "/"
    """The path and query (origin form) of a plain request."""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


def parse_authority(text: str, default_port: int | None) -> Target:
    """``host[:port]`` or ``[v6]:port``; raises ``HttpRequestError``."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise HttpRequestError(f"bad authority {text!r}")
        host, rest = text[1:close], text[close + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise HttpRequestError(f"bad IPv6 address in {text!r}") from None
        if rest and not rest.startswith(":"):
            raise HttpRequestError(f"bad authority {text!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = text.partition(":")
        if sep and not port_text:
            raise HttpRequestError(f"bad authority {text!r}")
    if not host or len(host) > 253 or not all(c.isalnum() or c in "-._:" for c in host):
        raise HttpRequestError(f"bad host in {text!r}")
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise HttpRequestError(f"bad port in {text!r}")
        port = int(port_text)
    elif default_port is not None:
        port = default_port
    else:
        raise HttpRequestError(f"{text!r} needs a port")
    if not 0 < port < 65536:
        raise HttpRequestError(f"port out of range in {text!r}")
    return Target(host.lower(), port)


def parse_head(data: bytes, limit: int = MAX_HEAD_BYTES) -> tuple[HttpRequest, int] | None:
    """The request head if complete (and how many bytes it used), None
    while it is not; raises ``HeadTooLarge`` beyond ``limit`` and
    ``HttpRequestError`` for a malformed head."""
    end = data.find(b"\r\n\r\n", 0, limit + 4)
    if end < 0:
        if len(data) >= limit + 4:
            raise HeadTooLarge(f"the request head exceeds {limit} bytes")
        return None
    used = end + 4
    try:
        text = data[:end].decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity
        raise HttpRequestError("undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpRequestError(f"bad request line {lines[0][:80]!r}")
    method, target, version = parts
    if not method or not all(ord(c) in _TOKEN for c in method):
        raise HttpRequestError(f"bad method {method[:20]!r}")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpRequestError(f"unsupported version {version[:20]!r}", 505
                               if version.startswith("HTTP/") else 400)
    if not target or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in target):
        raise HttpRequestError("bad request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if len(headers) >= MAX_HEADERS:
            raise HeadTooLarge(f"more than {MAX_HEADERS} headers")
        name, sep, value = line.partition(":")
        if not sep or not name or not all(ord(c) in _TOKEN for c in name):
            raise HttpRequestError(f"bad header line {line[:40]!r}")
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            raise HttpRequestError(f"control character in header {name[:40]!r}")
        headers.append((name, value.strip(" \t")))
    request = HttpRequest(method, target, version, tuple(headers))
    if method == "CONNECT":
        return replace(request, connect=parse_authority(target, None)), used
    if target.startswith("/"):
        return replace(request, path=target), used
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        raise HttpRequestError(f"only http:// URLs are proxied (got {target[:40]!r})")
    slash = rest.find("/")
    authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        raise HttpRequestError("user information in a URL is not proxied")
    return replace(request, url=parse_authority(authority, 80), path=path), used


def origin_head(request: HttpRequest) -> bytes:
    """The head sent to the origin for a plain (absolute-form) request:
    origin-form target, hop-by-hop headers removed, ``Connection: close``
    so each proxied connection carries one request (the next may name
    another host)."""
    assert request.url is not None
    lines = [f"{request.method} {request.path} {request.version}"]
    has_host = False
    for name, value in request.headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP:
            continue
        has_host = has_host or lower == "host"
        lines.append(f"{name}: {value}")
    if not has_host:
        host = request.url.host
        host = f"[{host}]" if ":" in host else host
        lines.append(f"Host: {host}" if request.url.port == 80 else
                     f"Host: {host}:{request.url.port}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def simple_response(status: int, body: bytes, content_type: str,
                    extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            "Connection: close", "Cache-Control: no-store"]
    head += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def error_response(status: int, reason: str, message: str) -> bytes:
    """A small HTML page a person can read; ``X-Overlay-Error`` carries the
    machine-readable reason (``unknown_name``, ``peer_offline`` …)."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    body = (f"<!doctype html><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(message, quote=False)}</p>"
            f"<p><small>overlay proxy: {html.escape(reason)}</small></p>\n").encode("utf-8")
    return simple_response(status, body, "text/html; charset=utf-8",
                           (("X-Overlay-Error", reason),))


def pac_file(proxy_host: str, proxy_port: int, zone: str, everything: bool = False) -> str:
    """A proxy auto-config that sends only ``*.<zone>`` (and the zone
    itself) through the proxy; everything else goes DIRECT, so the clear
    web is browsed as before.  ``everything`` (the daemon uses an exit)
    sends every host through the proxy."""
    host = f"[{proxy_host}]" if ":" in proxy_host else proxy_host
    where = f"{host}:{proxy_port}"
    if everything:
        return ("function FindProxyForURL(url, host) {\n"
                f"  return \"SOCKS5 {where}; SOCKS {where}; PROXY {where}\";\n"
                "}\n")
    return (
        "function FindProxyForURL(url, host) {\n"
        f"  if (dnsDomainIs(host, \".{zone}\") || host == \"{zone}\")\n"
        f"    return \"SOCKS5 {where}; SOCKS {where}; PROXY {where}\";\n"
        "  return \"DIRECT\";\n"
        "}\n")
