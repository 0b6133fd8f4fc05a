"""Reaching a target for forwards and the proxy: ``NAME`` + service (or
port) through the naming layer, or a direct TCP connection for hosts
outside the zone.

A name is resolved (the resolver's cache first), the service is chosen
(``policy.service_for_port`` for a port), the first reachable peer the
record names is dialed, directly when an address allows it and through
its relay's ``/p2p-circuit`` address otherwise (as ``name_connect``
does), and a ``/ovl/tcp/1.0.0`` stream is opened with the header
pipelined behind a lazy protocol selection.  Every failure becomes a
``TargetError`` whose reason a person can read.

``DirectDialer`` dials a non-zone host from this machine; with an exit
chosen (``--exit``), ``exit_client.ExitDialer`` takes its place.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

from multiaddr import Multiaddr

from overlay.apps.errors import Reason, TargetError
from overlay.apps.policy import service_for_port
from overlay.apps.pump import TcpStream
from overlay.apps.service_proto import SERVICE_PROTOCOL, Status, encode_header, status_reason
from overlay.errors import (
    InvalidMultiaddr,
    ProtocolNotSupported,
    RemoteProtocolError,
    StreamClosed,
    StreamReset,
    TransportError,
)
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import DIRECT, Connection
from overlay.identity import PeerId
from overlay.multiaddrs import parse_quic_multiaddr, with_p2p
from overlay.naming.errors import InvalidName, NamingError
from overlay.naming.net_errors import NameNotFound
from overlay.naming.record import NameRecord
from overlay.naming.resolver import Resolution
from overlay.wire.stream import ByteStream, GatedStream

__all__ = ["AppHost", "Connector", "Dialer", "DirectDialer", "NameLookup", "Pipelining",
           "StatusGate", "read_status"]

CONNECT_TIMEOUT = 10.0
"""Seconds to resolve, dial and hear the exposer's answer."""
WARM_SECONDS = 60.0
"""How long an exposer's OK for a service lets ``Pipelining.WARM`` skip
waiting for the next stream's answer."""
_MAX_WARM = 4096


class Pipelining(enum.Enum):
    """Whether opening a zone target waits for the exposer's status byte.

    ``NEVER`` waits (one more round trip; a refusal is a ``TargetError``
    the caller can show).  ``ALWAYS`` returns a ``StatusGate`` at once: the
    caller's bytes go out behind the header, and the status is read by
    ``StatusGate.check()`` or the first read.  ``WARM`` pipelines only when
    the same name and service answered OK within ``WARM_SECONDS``: a
    proxy client that needs an answer before it sends (SOCKS5, CONNECT)
    gets it at once, and a refusal after a success (rare) resets that one
    connection and makes the next one wait again."""

    NEVER = "never"
    ALWAYS = "always"
    WARM = "warm"


class AppHost(Protocol):
    @property
    def peer_id(self) -> PeerId: ...

    async def connect(self, addr: Multiaddr) -> Connection: ...

    def best_connection(self, peer_id: PeerId) -> Connection | None: ...

    async def new_stream(self, peer_id: PeerId, protocols: list[str], *,
                         lazy: bool = False) -> NegotiatedStream: ...


class NameLookup(Protocol):
    """What the connector needs of the naming service."""

    async def resolve(self, name: str, *, use_cache: bool = True) -> Resolution: ...


class Dialer(Protocol):
    """Opens a byte stream to a host outside the zone."""

    async def open(self, host: str, port: int) -> ByteStream: ...


class DirectDialer:
    """Outside the zone: a TCP connection from this host (no exit yet)."""

    async def open(self, host: str, port: int) -> ByteStream:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise TargetError(Reason.UNREACHABLE, f"cannot connect to {host}:{port}: "
                              f"{getattr(exc, 'strerror', None) or exc or 'timed out'}") from None
        return TcpStream(reader, writer)


class Connector:
    def __init__(self, host: AppHost, names: Callable[[], NameLookup | None], zone: str,
                 *, local: Callable[[str], tuple[str, int] | None] | None = None,
                 direct: Dialer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``names()`` is the running naming service (None: not running);
        ``local(service)`` the address of a service this node exposes, for
        names that point at this node itself."""
        self._host = host
        self._names = names
        self.zone = zone
        self._local = local
        self.direct: Dialer = direct or DirectDialer()
        self._clock = clock
        self._peers: dict[bytes, PeerId] = {}
        """Peer IDs of records already seen, so a warm request does not
        validate the same key again (bounded by ``_MAX_WARM``)."""
        self._warm: dict[tuple[str, str], float] = {}
        """(name, service) → when its exposer last answered OK."""

    def is_warm(self, name: str, service: str) -> bool:
        at = self._warm.get((name, service))
        return at is not None and self._clock() - at < WARM_SECONDS

    def answered(self, name: str, service: str, ok: bool) -> None:
        """Remember an exposer's answer for ``Pipelining.WARM``."""
        key = (name, service)
        self._warm.pop(key, None)  # re-inserted last: the dict stays in age order
        if ok:
            self._warm[key] = self._clock()
            if len(self._warm) > _MAX_WARM:
                del self._warm[next(iter(self._warm))]

    def in_zone(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host == self.zone or host.endswith("." + self.zone)

    async def open_port(self, host: str, port: int,
                        pipelined: Pipelining = Pipelining.NEVER) -> ByteStream:
        """The proxy's target: a zone name by port, anything else directly
        (``pipelined`` applies to zone names only)."""
        if not self.in_zone(host):
            return await self.direct.open(host, port)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                record = await self._record(host)
                try:
                    service = service_for_port(record.name, port, record.services)
                except TargetError:
                    # A cached record may predate the exposure: ask the network once.
                    record = await self._record(host, fresh=True)
                    service = service_for_port(record.name, port, record.services)
                pipe = pipelined is Pipelining.ALWAYS or (
                    pipelined is Pipelining.WARM and self.is_warm(record.name, service))
                return await self._open_record(record, service, pipe)
        except TimeoutError:
            raise TargetError(Reason.PEER_OFFLINE, f"{host}:{port} did not answer within "
                              f"{CONNECT_TIMEOUT:.0f} s") from None

    async def open_service(self, name: str, service: str, *,
                           pipelined: bool = False) -> ByteStream:
        """A forward's target: ``NAME:SERVICE``.  ``pipelined`` returns a
        ``StatusGate`` without waiting for the exposer's answer, so the
        client's first bytes save a round trip."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await self._open_record(await self._record(name), service, pipelined)
        except TimeoutError:
            raise TargetError(Reason.PEER_OFFLINE,
                              f"{name}:{service} did not answer within "
                              f"{CONNECT_TIMEOUT:.0f} s") from None

    async def _record(self, name: str, *, fresh: bool = False) -> NameRecord:
        names = self._names()
        if names is None:
            raise TargetError(Reason.RESOLVE_FAILED, "naming is not running in this daemon")
        try:
            return (await names.resolve(name, use_cache=not fresh)).record
        except InvalidName as exc:
            raise TargetError(Reason.BAD_TARGET, str(exc)) from None
        except NameNotFound:
            raise TargetError(Reason.UNKNOWN_NAME, f"no such name: {name}") from None
        except (NamingError, TransportError) as exc:
            raise TargetError(Reason.RESOLVE_FAILED, f"cannot resolve {name}: {exc}") from None

    async def _open_record(self, record: NameRecord, service: str,
                           pipelined: bool) -> ByteStream:
        errors: list[str] = []
        for target in record.peers:
            peer = self._peer_id(target.peer_id)
            if peer == self._host.peer_id:
                local = self._local(service) if self._local is not None else None
                if local is None:
                    raise TargetError(Reason.NOT_EXPOSED,
                                      f"{record.name} is this node, which does not expose "
                                      f"{service!r}")
                return await DirectDialer().open(*local)
            if await self.dial_peer(peer, target.addrs, errors):
                stream = await self._open_stream(record.name, peer, service, pipelined)
                if not pipelined:
                    return stream
                return StatusGate(stream, record.name, service,
                                  on_answer=partial(self.answered, record.name, service))
        if not record.peers:
            raise TargetError(Reason.PEER_OFFLINE, f"{record.name} names no peer")
        raise TargetError(Reason.PEER_OFFLINE, f"{record.name} is offline: no peer it names "
                          "answered (" + "; ".join(errors) + ")")

    def _peer_id(self, raw: bytes) -> PeerId:
        peer = self._peers.get(raw)
        if peer is None:
            peer = PeerId.from_bytes(raw)
            if len(self._peers) >= _MAX_WARM:
                self._peers.clear()
            self._peers[raw] = peer
        return peer

    @property
    def via_exit(self) -> bool:
        """Whether hosts outside the zone go through an exit."""
        return not isinstance(self.direct, DirectDialer)

    async def dial_peer(self, peer: PeerId, addrs: tuple[bytes, ...],
                        errors: list[str]) -> bool:
        """Connect ``peer`` at one of ``addrs`` (appending each failure to
        ``errors``); whether a connection is up."""
        live = self._host.best_connection(peer)
        if live is not None and live.path == DIRECT:
            # The usual case on a request path: parsing and routing every
            # address again cost 0.4 ms per proxied request.
            return True
        # Direct addresses first; a relay's /p2p-circuit address only when none answers.
        for raw in sorted(addrs, key=_relayed):
            try:
                addr = Multiaddr(raw)
                if "/p2p-circuit" in str(addr):
                    addr = with_p2p(addr, peer)  # behind a NAT: through its relay
                else:
                    addr = parse_quic_multiaddr(addr).with_peer_id(peer).to_multiaddr()
                await self._host.connect(addr)
                return True
            except (TransportError, RemoteProtocolError, InvalidMultiaddr, ValueError) as exc:
                errors.append(f"{exc}")
        return False

    async def _open_stream(self, name: str, peer: PeerId, service: str,
                           pipelined: bool) -> ByteStream:
        try:
            stream = await self._host.new_stream(peer, [SERVICE_PROTOCOL], lazy=True)
        except (TransportError, RemoteProtocolError) as exc:
            raise TargetError(Reason.PEER_OFFLINE, f"{name}: {exc}") from None
        try:
            stream.write(encode_header(service))
            await stream.drain()
        except (StreamClosed, StreamReset, TransportError) as exc:
            stream.reset()
            raise TargetError(Reason.PEER_OFFLINE, f"{name}: the stream failed: {exc}") from None
        if pipelined:
            return stream
        try:
            await read_status(stream, name, service)
        except TargetError:
            self.answered(name, service, False)
            raise
        self.answered(name, service, True)
        return stream


async def read_status(stream: ByteStream, name: str, service: str) -> None:
    """Read the exposer's answer; raises ``TargetError`` (after resetting
    the stream) unless it is OK."""
    try:
        status = (await stream.readexactly(1))[0]
    except ProtocolNotSupported:
        stream.reset()
        raise TargetError(Reason.NOT_EXPOSED,
                          f"{name} exposes no services (it does not run the service "
                          "layer)") from None
    except (StreamClosed, StreamReset, TransportError, RemoteProtocolError) as exc:
        stream.reset()
        raise TargetError(Reason.PEER_OFFLINE, f"{name}: the stream failed: {exc}") from None
    except BaseException:
        stream.reset()
        raise
    if status != Status.OK:
        stream.reset()
        try:
            reason = status_reason(Status(status))
        except ValueError:
            raise TargetError(Reason.UNREACHABLE, f"{name}: unknown status {status}") from None
        raise TargetError(reason, _STATUS_TEXT[reason].format(name=name, service=service))


class StatusGate(GatedStream):
    """A pipelined service stream: the client's bytes flow at once, and
    the exposer's status byte is read (and checked) by ``check()`` or the
    first read, so a refusal resets the pump.  ``error`` keeps the refusal;
    ``on_answer(ok)`` hears the status."""

    def __init__(self, stream: ByteStream, name: str, service: str, *,
                 on_answer: Callable[[bool], None] | None = None) -> None:
        super().__init__(stream)
        self._name = name
        self._service = service
        self._checked = False
        self._on_answer = on_answer
        self.error: TargetError | None = None

    async def check(self) -> None:
        """Read the status now; raises ``TargetError`` (the stream reset)
        unless it is OK."""
        if self._checked:
            if self.error is not None:
                raise self.error
            return
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await read_status(self._stream, self._name, self._service)
            except TimeoutError:
                # The exposer answers right after its local connect (5 s at
                # most): silence is a peer that is gone or broken.
                raise TargetError(Reason.PEER_OFFLINE,
                                  f"{self._name} did not answer within "
                                  f"{CONNECT_TIMEOUT:.0f} s") from None
        except TargetError as exc:
            self._checked = True
            self.error = exc
            if self._on_answer is not None:
                self._on_answer(False)
            raise
        self._checked = True
        if self._on_answer is not None:
            self._on_answer(True)

    async def _before_read(self) -> None:
        if not self._checked or self.error is not None:
            try:
                await self.check()
            except TargetError as exc:
                raise StreamReset(str(exc)) from exc


_STATUS_TEXT = {
    Reason.NOT_EXPOSED: "{name} does not expose a service called {service!r}",
    Reason.REFUSED: "{name} refused the connection: this node is not in the allowlist "
                    "of {service!r}",
    Reason.UNREACHABLE: "{name} exposes {service!r} but could not connect to it "
                        "(its local server is down?)",
}



def _relayed(raw: bytes) -> bool:
    """Whether an address goes through a relay (unparsable ones sort last
    too: dialing them reports the error)."""
    try:
        return "/p2p-circuit" in str(Multiaddr(raw))
    except ValueError:
        return True
