"""A DNS front for names: any program can resolve ``alice.ovl`` through
the daemon with its ordinary resolver.

It answers over UDP and TCP on one local address (``127.0.0.1:5335`` by
default) from the daemon's resolver:

- names under the zone: A and AAAA from the record's IP addresses, TXT
  from its TXT entries plus ``peer=<peer ID>`` for each target peer, SRV
  from its services (``_proto._udp.name`` selects one protocol, the bare
  name lists them all);
- a name without a valid record: NXDOMAIN; a name outside the zone:
  REFUSED; a resolver failure: SERVFAIL;
- anything that does not parse as one DNS query is dropped (UDP) or ends
  the connection (TCP), and never affects other clients.

Limits by source (``overlay.limits``): each client address has a token
bucket of queries (a client over it gets REFUSED over TCP, silence over
UDP), and at most ``max_tcp_per_source`` TCP connections; a TCP client
silent for ``tcp_idle_timeout`` (a few seconds) is closed.  A name is
looked up once at a time however many ask (later askers share the first
lookup), the resolver's cache (negative answers included) is consulted
before any lookup, and at most ``max_pending_names`` distinct names wait
for the network: a flood of random names gets SERVFAIL at once while
cached and already-pending names keep being answered.

UDP answers respect 512 bytes, or the EDNS size the client announced (at
most 4096); larger answers are sent truncated (TC) so clients retry over
TCP.  Every query, lookup and TCP connection runs as a job of this
front's ``Supervisor``: a failure is logged and costs only that client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import cast

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, TXT, A, DNSError, DNSLabel, DNSRecord

from overlay.errors import ConfigError, LocalProtocolError, OverlayError
from overlay.identity import PeerId
from overlay.naming.errors import InvalidName
from overlay.naming.names import DEFAULT_ZONE
from overlay.naming.net_errors import NameNotFound
from overlay.naming.record import NameRecord, RecordKind
from overlay.naming.resolver import Resolution
from overlay.limits import LimitHits, RateLimiter, ScopedCounter, source_key
from overlay.supervisor import Job, Supervisor

__all__ = ["DEFAULT_DNS_ADDRESS", "DnsFront", "DnsFrontConfig", "parse_dns_address"]

log = logging.getLogger(__name__)

DEFAULT_DNS_ADDRESS = "127.0.0.1:5335"
_MAX_QUERY_BYTES = 4096
_MAX_UDP_ANSWER = 4096
_CLASSIC_UDP = 512

ResolveFn = Callable[[str], Awaitable[Resolution]]
"""Resolve a zone name; raises ``NameNotFound``/``InvalidName`` for NXDOMAIN."""
CachedFn = Callable[[str], Resolution | None]
"""The cached answer without a lookup (None: not cached); raises
``NameNotFound`` for a cached negative answer."""


def parse_dns_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[v6]:PORT``) → (host, port); ``off`` → None."""
    value = text.strip()
    if value.lower() == "off":
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"DNS address {text!r} must be HOST:PORT or `off`")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"DNS address {text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"DNS address {text!r}: the port must be 0..65535")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class DnsFrontConfig:
    host: str = "127.0.0.1"
    """Address to serve on (both UDP and TCP)."""
    port: int = 5335
    """Port; 0 picks a free one (the same for UDP and TCP)."""
    zone: str = DEFAULT_ZONE
    """Names under this zone are answered; others are REFUSED."""
    max_inflight: int = 256
    """Queries answered at once; further UDP queries are dropped."""
    max_tcp_connections: int = 64
    """TCP clients served at once; further ones are closed."""
    tcp_idle_timeout: float = 3.0
    """Seconds a TCP client may stay silent between queries (short, so
    silent clients cannot hold the port)."""
    max_tcp_per_source: int = 4
    """TCP clients one source (IP prefix; each loopback address) may hold."""
    queries_per_second: float = 50.0
    """Queries a second one source may send on average."""
    query_burst: float = 100.0
    """Queries one source may send at once."""
    max_pending_names: int = 32
    """Distinct names waiting for a network lookup at once; a query for
    another uncached name is answered SERVFAIL at once."""
    max_ttl: int = 3600
    """Upper bound of the TTL put on answers."""
    negative_ttl: int = 30
    """TTL hint of NXDOMAIN answers (not a SOA; clients mostly ignore it)."""

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(f"host {self.host!r} is not an IP address") from None
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if (self.max_inflight < 1 or self.max_tcp_connections < 1
                or self.max_tcp_per_source < 1 or self.max_pending_names < 1):
            raise ValueError("limits must be at least 1")
        if not (self.queries_per_second > 0 and self.query_burst >= 1):
            raise ValueError("queries_per_second must be positive, query_burst at least 1")
        if not self.tcp_idle_timeout > 0 or self.max_ttl < 0 or self.negative_ttl < 0:
            raise ValueError("timeouts and TTLs must be positive")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, front: DnsFront) -> None:
        self.front = front
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass
        # asyncio.DatagramTransport, though it implements it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.front._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP socket error: %r", exc)


class DnsFront:
    """``async with DnsFront(config, resolve) as front``; ``front.address``
    is the bound (host, port)."""

    def __init__(self, config: DnsFrontConfig, resolve: ResolveFn,
                 cached: CachedFn | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._resolve = resolve
        self._cached = cached
        self._clock = clock
        self._rates = RateLimiter(config.queries_per_second, config.query_burst)
        self._tcp_sources = ScopedCounter(config.max_tcp_per_source)
        self._pending: dict[str, asyncio.Future[Resolution]] = {}
        self.hits = LimitHits()
        """Limits hit, by cause (``dns.rate``, ``dns.pending_names`` …)."""
        self._zone = config.zone.rstrip(".").lower()
        self._sup: Supervisor | None = None
        self._udp: _Udp | None = None
        self._tcp: asyncio.Server | None = None
        self._inflight = 0
        self._tcp_clients = 0
        self.address: tuple[str, int] = (config.host, config.port)
        self.dropped = 0
        """Datagrams dropped: malformed, responses, or over the limit."""
        self.address_hook: Callable[[NameRecord], Sequence[bytes]] | None = None
        """If set, A and AAAA answers carry the addresses it returns for a
        record (packed, 4 or 16 bytes) instead of the record's own: the
        virtual-IP extension answers with the peer's virtual addresses."""
        self.answered = 0

    # -- lifetime -----------------------------------------------------------

    async def __aenter__(self) -> DnsFront:
        if self._sup is not None:
            raise LocalProtocolError("a DNS front can be started once")
        loop = asyncio.get_running_loop()
        sup = Supervisor("DNS front", log)
        await sup.__aenter__()
        self._sup = sup
        try:
            # With port 0 the TCP port must follow the UDP one; another
            # program may hold it for TCP, so try a few UDP ports.
            for _ in range(8):
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(self.config.host, self.config.port))
                port = int(transport.get_extra_info("sockname")[1])
                _widen_receive_buffer(transport)
                try:
                    self._tcp = await asyncio.start_server(
                        self._on_tcp, self.config.host, port, reuse_address=True)
                except OSError:
                    transport.close()
                    if self.config.port != 0:
                        raise
                    continue
                self._udp = protocol
                self.address = (self.config.host, port)
                break
            else:
                raise OSError("no port free for both UDP and TCP")
        except BaseException:
            self._sup = None
            await sup.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sup, self._sup = self._sup, None
        if sup is None:
            raise LocalProtocolError("the DNS front was not started")
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._tcp is not None:
            self._tcp.close()
        await sup.aclose()  # cancels every query, lookup and connection and awaits them
        if self._tcp is not None:
            await self._tcp.wait_closed()

    def _spawn(self, job: Job, what: str) -> bool:
        """Run ``job`` under the front's supervisor; False once it is closed."""
        sup = self._sup
        if sup is None:
            return False
        sup.spawn(job, what)
        return True

    # -- transports ---------------------------------------------------------

    def _limit_hit(self, cause: str, source: str) -> None:
        reported = self.hits.hit(cause, self._clock())
        if reported:
            log.warning("DNS front limit %s: %d refused since the last report; latest from %s",
                        cause, reported, source)

    def _on_datagram(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) > _MAX_QUERY_BYTES:
            self.dropped += 1
            return
        source = source_key(str(addr[0]))
        if not self._rates.allow(source, self._clock()):
            # Silence, not REFUSED: a reply would amplify a spoofed flood.
            self.dropped += 1
            self._limit_hit("dns.rate", source)
            return
        if self._inflight >= self.config.max_inflight:
            self.dropped += 1
            self._limit_hit("dns.inflight", source)
            return
        self._inflight += 1
        if not self._spawn(partial(self._answer_udp, data, addr), "DNS query"):
            self._inflight -= 1

    async def _answer_udp(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            reply = await self.answer(data, udp=True)
        finally:
            self._inflight -= 1
        udp = self._udp
        if reply is None:
            self.dropped += 1
        elif udp is not None and udp.transport is not None and not udp.transport.is_closing():
            udp.transport.sendto(reply, addr)

    def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = source_key(str(peer[0]) if isinstance(peer, tuple) and peer else "?")
        cause = None
        if self._tcp_clients >= self.config.max_tcp_connections:
            cause = "dns.tcp_total"
        elif not self._tcp_sources.has_room(source):
            cause = "dns.tcp_per_source"
        if cause is not None:
            self._limit_hit(cause, source)
            writer.close()
            return
        if not self._spawn(partial(self._serve_tcp, reader, writer, source),
                           "DNS TCP client"):
            writer.close()
            return
        self._tcp_clients += 1
        self._tcp_sources.acquire(source)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         source: str) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.tcp_idle_timeout):
                        header = await reader.readexactly(2)
                        (size,) = struct.unpack("!H", header)
                        data = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                if not self._rates.allow(source, self._clock()):
                    self._limit_hit("dns.rate", source)
                    reply = _refused(data)
                else:
                    reply = await self.answer(data, udp=False)
                if reply is None:
                    return  # garbage on a stream: nothing after it can be trusted
                writer.write(struct.pack("!H", len(reply)) + reply)
                try:
                    await writer.drain()
                except ConnectionError:
                    return
        finally:
            self._tcp_clients -= 1
            self._tcp_sources.release(source)
            writer.close()

    # -- answering ------------------------------------------------------------

    async def answer(self, data: bytes, *, udp: bool) -> bytes | None:
        """The reply to one wire-format query, or None to drop it."""
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, KeyError, struct.error, UnicodeError):
            return None
        header = request.header
        if header.qr or len(request.questions) != 1:
            return None
        reply = request.reply(ra=0, aa=1)
        reply.ar = []
        if header.opcode != 0:
            reply.header.rcode = RCODE.NOTIMP
            return bytes(reply.pack())
        question = request.q
        try:
            qname = _name_text(question.qname)
        except UnicodeError:
            return None
        await self._fill(reply, qname, question.qname, int(question.qtype))
        self.answered += 1
        packed: bytes = reply.pack()
        if udp:
            limit = _udp_limit(request)
            if len(packed) > limit:
                short = request.reply(ra=0, aa=1)
                short.ar = []
                short.header.rcode = reply.header.rcode
                short.header.tc = 1
                packed = bytes(short.pack())
        return packed

    async def _fill(self, reply: DNSRecord, qname: str, label: DNSLabel, qtype: int) -> None:
        zone = self._zone
        if qname != zone and not qname.endswith("." + zone):
            reply.header.rcode = RCODE.REFUSED
            return
        if qname == zone:
            return  # the apex exists but carries no data
        labels = qname.split(".")
        service_labels: list[str] = []
        while len(labels) > 2 and labels[0].startswith("_"):
            service_labels.append(labels.pop(0))
        name = ".".join(labels)
        try:
            resolution = await self._lookup(name)
        except (NameNotFound, InvalidName):
            reply.header.rcode = RCODE.NXDOMAIN
            return
        except (OverlayError, OSError, TimeoutError) as exc:
            log.debug("DNS query for %s failed: %r", qname, exc)
            reply.header.rcode = RCODE.SERVFAIL
            return
        record = resolution.record
        if record.kind in (RecordKind.TRANSFER, RecordKind.RELEASE):
            return  # the name is changing hands: no data yet
        ttl = self._ttl(resolution)
        if service_labels:
            if qtype in (QTYPE.SRV, QTYPE.ANY):
                self._add_srv(reply, label, name, record, ttl, service_labels[0][1:])
            return
        ips = record.ips if self.address_hook is None else self.address_hook(record)
        if qtype in (QTYPE.A, QTYPE.ANY):
            for ip in ips:
                if len(ip) == 4:
                    reply.add_answer(RR(label, QTYPE.A, rdata=A(_ip_text(ip)), ttl=ttl))
        if qtype in (QTYPE.AAAA, QTYPE.ANY):
            for ip in ips:
                if len(ip) == 16:
                    reply.add_answer(RR(label, QTYPE.AAAA, rdata=AAAA(_ip_text(ip)), ttl=ttl))
        if qtype in (QTYPE.TXT, QTYPE.ANY):
            for text in _txt_strings(record):
                reply.add_answer(RR(label, QTYPE.TXT, rdata=TXT(text.encode("utf-8")), ttl=ttl))
        if qtype in (QTYPE.SRV, QTYPE.ANY):
            self._add_srv(reply, label, name, record, ttl, None)

    async def _lookup(self, name: str) -> Resolution:
        """The cache first; then one lookup per name however many ask, and
        no more than ``max_pending_names`` names waiting at once."""
        if self._cached is not None:
            hit = self._cached(name)  # NameNotFound for a cached negative answer
            if hit is not None:
                return hit
        if self._sup is None:
            return await self._resolve(name)  # answer() called outside `async with`
        pending = self._pending.get(name)
        if pending is None:
            if len(self._pending) >= self.config.max_pending_names:
                self._limit_hit("dns.pending_names", name)
                raise _Busy()
            pending = asyncio.get_running_loop().create_future()
            self._pending[name] = pending
            if not self._spawn(partial(self._run_lookup, name, pending), f"DNS lookup of {name}"):
                del self._pending[name]
                raise _Busy()
        # Shielded: one asker giving up must not cancel the others' lookup.
        return await asyncio.shield(pending)

    async def _run_lookup(self, name: str, future: asyncio.Future[Resolution]) -> None:
        try:
            future.set_result(await self._resolve(name))
        except (OverlayError, OSError, TimeoutError) as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; askers see it too
        finally:
            self._pending.pop(name, None)
            if not future.done():
                future.cancel()

    def _add_srv(self, reply: DNSRecord, label: DNSLabel, name: str, record: NameRecord,
                 ttl: int, protocol: str | None) -> None:
        for service in record.services:
            if protocol is not None and service.protocol.lower() != protocol:
                continue
            target = service.target or name
            reply.add_answer(RR(label, QTYPE.SRV, ttl=ttl, rdata=SRV(
                priority=service.priority, weight=service.weight, port=service.port,
                target=target + ".")))

    def _ttl(self, resolution: Resolution) -> int:
        remaining = int(resolution.fresh_until - time.time())
        return max(0, min(self.config.max_ttl, resolution.record.ttl, remaining))


_UDP_RECEIVE_BUFFER = 1 << 20


def _widen_receive_buffer(transport: asyncio.BaseTransport) -> None:
    # Under a flood, a short stall of the loop must not let the kernel drop
    # the legitimate queries with the rest (the kernel caps the size).
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RECEIVE_BUFFER)
        except OSError as exc:
            log.debug("cannot widen the DNS receive buffer: %r", exc)


class _Busy(OverlayError):
    """Too many distinct names pending: answered SERVFAIL at once."""


def _refused(data: bytes) -> bytes | None:
    try:
        request = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, KeyError, struct.error, UnicodeError):
        return None
    reply = request.reply(ra=0, aa=0)
    reply.ar = []
    reply.header.rcode = RCODE.REFUSED
    return bytes(reply.pack())


def _name_text(label: DNSLabel) -> str:
    parts = []
    for raw in label.label:
        parts.append(raw.decode("ascii").lower())
    return ".".join(parts)


def _ip_text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def _txt_strings(record: NameRecord) -> list[str]:
    out = list(record.txt)
    for peer in record.peers:
        try:
            out.append(f"peer={PeerId.from_bytes(peer.peer_id)}")
        except OverlayError:
            continue
    return out


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(_CLASSIC_UDP, min(int(rr.rclass), _MAX_UDP_ANSWER))
    return _CLASSIC_UDP
