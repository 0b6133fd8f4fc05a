"""One UDP socket serving inbound and outbound libp2p QUIC connections.

Datagrams are demultiplexed by destination connection ID.  Datagrams that
are not QUIC (STUN, hole-punch probes, junk) go to an optional hook, so NAT
traversal can share the socket whose mapping the peers already know.

A client Initial that would create a connection passes ``Admission``
(admission.py): past ``retry_threshold`` handshakes in progress, or half
of its IP's handshake share, a client must first return a Retry token
(retry.py) to prove its address; handshakes and connections are capped per
IP and per /24 (/48).  Every limit hit is counted in ``limit_hits`` by
cause and logged at most once a minute per cause.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import ipaddress
import logging
import os
import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicHeader,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from overlay.errors import ConnectionClosed, DialError
from overlay.identity import PeerId, PrivateKey
from overlay.limits import LimitHits
from overlay.supervisor import contain
from overlay.transport.admission import Admission, Source, Verdict
from overlay.transport.aioquic_compat import Libp2pQuicConnection
from overlay.transport.config import TransportConfig
from overlay.transport.connection import ALPN, QuicConn
from overlay.transport.errors import GOING_AWAY, BindError, EndpointClosed, InvalidToken
from overlay.transport.icmp import enable_icmp_errors, read_icmp_errors
from overlay.transport.retry import RetryTokens, close_initial, retry_packet
from overlay.transport.tls import CertificateVerifier, TlsCredentials, generate_credentials

__all__ = ["QuicEndpoint", "DatagramHook", "is_stun"]

log = logging.getLogger(__name__)

DatagramHook = Callable[[bytes, tuple[str, int]], bool]
"""Receives every non-QUIC datagram; returns True if it consumed it."""

_CID_LENGTH: Final = 8
_MIN_INITIAL: Final = 1200  # RFC 9000 section 14.1
_STUN_MAGIC: Final = b"\x21\x12\xa4\x42"
_SUPPORTED_VERSIONS: Final = QuicConfiguration().supported_versions
_SOCKET_BUFFER: Final = 4 << 20
_READ_BATCH: Final = 64
_MAX_DATAGRAM: Final = 65535
_UDP_SEGMENT: Final = 103  # linux/udp.h (UDP GSO); Python's socket module lacks the name
# Errors by which a kernel or device says it cannot do GSO on this socket.
_NO_GSO: Final = frozenset({errno.EINVAL, errno.EMSGSIZE, errno.ENOPROTOOPT,
                            errno.EOPNOTSUPP, errno.EIO})


def is_stun(data: bytes) -> bool:
    """RFC 5389: the top two bits are zero and the magic cookie follows the
    type and length fields."""
    return len(data) >= 20 and data[0] & 0xC0 == 0 and data[4:8] == _STUN_MAGIC


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: QuicEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        self._endpoint._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for one peer must not affect the others.  A send that
        # fails at once (no route) is reported here from inside sendto(), so
        # the endpoint can hand it to the connection that sent.
        log.debug("UDP error on %s: %s", self._endpoint.local_address, exc)
        if isinstance(exc, OSError):
            self._endpoint._socket_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._endpoint._socket_closed()


class QuicEndpoint:
    """A bound UDP socket with its QUIC connections; create with ``create``."""

    def __init__(
        self,
        private_key: PrivateKey,
        config: TransportConfig,
        credentials: TlsCredentials,
        family: socket.AddressFamily,
    ) -> None:
        self.config = config
        self.peer_id = PeerId.from_public_key(private_key.public_key())
        self._credentials = credentials
        self._verifier = CertificateVerifier()
        self._family = family
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._send_error: OSError | None = None
        self._local_address: tuple[str, int] = ("", 0)
        self._by_cid: dict[bytes, QuicConn] = {}
        self._connections: set[QuicConn] = set()  # until aioquic is done
        self._live: set[QuicConn] = set()  # until closed
        self._handshaking_inbound: set[QuicConn] = set()
        self._accept_queue: deque[QuicConn] = deque()
        self._accept_event = asyncio.Event()
        self._hook: DatagramHook | None = None
        self._closing = False
        self._socket_gone = asyncio.Event()
        self._sock: socket.socket | None = None
        self._gso = sys.platform == "linux"  # until the kernel says otherwise
        self._icmp = False
        self.limit_hits = LimitHits()
        """Inbound Initials answered by Retry, dropped or refused, by cause."""
        self._retry_tokens = RetryTokens(config.retry_token_lifetime)
        self._admission = Admission(config, "")
        self._sources: dict[QuicConn, Source] = {}  # inbound, until closed

    @classmethod
    async def create(
        cls,
        host: str,
        port: int,
        private_key: PrivateKey,
        config: TransportConfig | None = None,
        *,
        credentials: TlsCredentials | None = None,
    ) -> QuicEndpoint:
        """Bind ``host:port`` (an IPv4 or IPv6 literal; port 0 picks one).

        ``credentials`` overrides the generated certificate, which only
        tests need.  Raises ``BindError``.
        """
        config = config or TransportConfig()
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise BindError(f"{host!r} is not an IP address") from None
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if not 0 <= port < 65536:
            raise BindError(f"invalid UDP port {port}")
        if credentials is None:
            credentials = generate_credentials(private_key, datetime.datetime.now(datetime.UTC))
        endpoint = cls(private_key, config, credentials, family)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # The daemon binds 0.0.0.0 and :: on the same port.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
                except OSError:
                    pass  # a smaller buffer only costs throughput
            sock.bind((host, port))
            sock.setblocking(False)
            # Only asyncio's own loop is known to hand a socket error to
            # error_received, where the error queue is drained; a loop that
            # did not would poll the socket as readable forever.
            endpoint._icmp = (
                config.icmp_errors
                and isinstance(endpoint._loop, asyncio.SelectorEventLoop)
                and enable_icmp_errors(sock, family)
            )
            transport, _ = await endpoint._loop.create_datagram_endpoint(
                lambda: _Protocol(endpoint), sock=sock
            )
        except OSError as exc:
            sock.close()
            raise BindError(f"cannot bind UDP {host} port {port}: {exc.strerror or exc}") from None
        endpoint._transport = transport
        endpoint._sock = sock
        bound = sock.getsockname()
        endpoint._local_address = (str(bound[0]), int(bound[1]))
        endpoint._admission = Admission(config, endpoint._local_address[0])
        return endpoint

    async def __aenter__(self) -> QuicEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- public API ---------------------------------------------------------

    @property
    def local_address(self) -> tuple[str, int]:
        return self._local_address

    @property
    def connections(self) -> list[QuicConn]:
        """Live connections, including those still handshaking."""
        return list(self._live)

    @property
    def admission(self) -> Admission:
        """The per-source counts of inbound handshakes and connections."""
        return self._admission

    def set_datagram_hook(self, hook: DatagramHook | None) -> None:
        self._hook = hook

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send a raw datagram from this endpoint's socket (hole punching)."""
        if self._transport is None or self._closing:
            raise EndpointClosed("endpoint is closed")
        self._transport.sendto(data, addr)

    async def dial(
        self, addr: tuple[str, int], expected_peer: PeerId | None = None
    ) -> QuicConn:
        """Connect and authenticate; raises ``PeerIdMismatch``,
        ``HandshakeError`` or ``DialError``."""
        if self._closing:
            raise EndpointClosed("endpoint is closed")
        target = self._resolve(addr)
        if len(self._live) >= self.config.max_connections:
            raise DialError(f"connection limit of {self.config.max_connections} reached")
        conn = QuicConn(
            self,
            lambda check: Libp2pQuicConnection(
                configuration=self._quic_configuration(is_client=True),
                certificate_check=check,
                max_inbound_streams=self.config.max_inbound_streams,
            ),
            self.config,
            is_initiator=True,
            verifier=self._verifier,
            expected_peer=expected_peer,
        )
        self._connections.add(conn)
        self._live.add(conn)
        conn._quic.connect(target, now=time.monotonic())
        conn._transmit()
        try:
            await conn._wait_ready()
        except asyncio.CancelledError:
            conn.close(reason="dial cancelled")
            raise
        return conn

    async def accept(self) -> QuicConn:
        """The next authenticated inbound connection; raises ``EndpointClosed``."""
        while True:
            if self._closing:
                raise EndpointClosed("endpoint is closed")
            while self._accept_queue:
                conn = self._accept_queue.popleft()
                if not conn.is_closed:
                    return conn
            self._accept_event.clear()
            await self._accept_event.wait()

    async def aclose(self) -> None:
        """Close every connection (CONNECTION_CLOSE with ``GOING_AWAY`` is
        sent, so peers forget us at once) and the socket."""
        if self._closing:
            await self._socket_gone.wait()
            return
        self._closing = True
        self._accept_event.set()
        for conn in list(self._connections):
            conn._abandon(EndpointClosed("endpoint closed"), reason="endpoint closing", code=GOING_AWAY)
        self._release()
        if self._transport is not None:
            self._transport.close()
            await self._socket_gone.wait()

    def abort_for_test(self) -> None:
        """Vanish as a crashed process does: drop every connection and the
        socket without sending a single datagram (no CONNECTION_CLOSE), so
        peers only learn of it from silence or ICMP.  For tests; ``aclose``
        afterwards just waits for the socket to be gone."""
        if self._closing:
            return
        self._closing = True
        self._accept_event.set()
        for conn in list(self._connections):
            conn._abandon(EndpointClosed("endpoint aborted"))
        self._release()
        if self._transport is not None:
            self._transport.abort()

    def _release(self) -> None:
        self._connections.clear()
        self._live.clear()
        self._by_cid.clear()
        self._sources.clear()
        self._sock = None

    # --- datagram input -----------------------------------------------------

    def _datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        self._dispatch(data, addr)
        # Drain what else is queued on the socket before returning to the
        # loop: the connections then answer a whole batch of datagrams with
        # one deferred transmit (one ACK) instead of one per datagram.
        # asyncio's selector transport reads a single datagram per wake-up.
        sock = self._sock
        for _ in range(_READ_BATCH):
            if sock is None or self._closing:
                return
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:  # an ICMP error queued for the socket
                self._socket_error(exc)
                return
            self._dispatch(data, addr)

    def _dispatch(self, data: bytes, addr: NetworkAddress) -> None:
        if not data or self._closing:
            return
        if data[0] & 0x40:  # QUIC's fixed bit; STUN's top two bits are zero
            self._quic_datagram(data, addr)
        elif self._hook is not None:
            hook = self._hook
            # A failing hook must not take the socket down.
            contain(lambda: hook(data, (str(addr[0]), int(addr[1]))),
                    lambda exc: log.error("datagram hook failed on a datagram from %s", addr,
                                          exc_info=exc))

    def _quic_datagram(self, data: bytes, addr: NetworkAddress) -> None:
        if not data[0] & 0x80:
            # A short header (every packet after the handshake) is the first
            # byte and our connection ID: no header parse here, as aioquic
            # parses it again anyway.  Unknown ones are dropped, as below.
            short = self._by_cid.get(data[1:1 + _CID_LENGTH])
            if short is not None:
                short._datagram_received(data, addr)
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=_CID_LENGTH)
        except ValueError:
            return  # not QUIC after all
        conn = self._by_cid.get(header.destination_cid)
        if conn is not None:
            conn._datagram_received(data, addr)
            return
        if header.version is None or header.packet_type is QuicPacketType.VERSION_NEGOTIATION:
            return  # short header or VN for an unknown connection: nothing to do
        if header.version not in _SUPPORTED_VERSIONS:
            if len(data) < _MIN_INITIAL:
                return  # RFC 9000 section 5.2.2: too short to deserve an answer
            self._send_datagram(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=_SUPPORTED_VERSIONS,
                ),
                addr,
            )
            return
        if header.packet_type is QuicPacketType.INITIAL and len(data) >= _MIN_INITIAL:
            self._accept_initial(data, addr, header)

    def _accept_initial(self, data: bytes, addr: NetworkAddress, header: QuicHeader) -> None:
        now = time.monotonic()
        ip, port = str(addr[0]), int(addr[1])
        version = header.version or 0
        original_cid = header.destination_cid
        retry_cid: bytes | None = None
        if header.token and self._retry_tokens.recognises(header.token):
            # One of our Retry tokens (we send no NEW_TOKEN): if it fails it
            # is forged, replayed elsewhere or too old.  Any other token is
            # another server's NEW_TOKEN token, which RFC 9000 section 8.1.3
            # says to treat as no token at all: admission below decides, and
            # may still ask for a Retry.
            try:
                original_cid = self._retry_tokens.validate(
                    ip, port, header.destination_cid, header.token, now
                )
            except InvalidToken as exc:
                self._limit_hit("quic.invalid_token", now, addr, str(exc))
                self._send_datagram(
                    close_initial(version, header.source_cid, header.destination_cid,
                                  QuicErrorCode.INVALID_TOKEN, "invalid address validation token"),
                    addr,
                )
                return
            retry_cid = header.destination_cid
        source = self._admission.source(ip)
        decision = self._admission.decide(
            source,
            validated=retry_cid is not None,
            handshakes=len(self._handshaking_inbound),
            connections=len(self._live),
        )
        if decision.verdict is not Verdict.ACCEPT:
            self._limit_hit(decision.cause or decision.verdict.value, now, addr)
            if decision.verdict is Verdict.RETRY:
                new_cid = os.urandom(_CID_LENGTH)
                token = self._retry_tokens.issue(ip, port, original_cid, new_cid, now)
                self._send_datagram(
                    retry_packet(version, header.source_cid, original_cid, new_cid, token), addr
                )
            elif decision.verdict is Verdict.REFUSE:
                self._send_datagram(
                    close_initial(version, header.source_cid, header.destination_cid,
                                  QuicErrorCode.CONNECTION_REFUSED,
                                  f"too many connections ({decision.cause})"),
                    addr,
                )
            return  # DROP: the client retransmits; later there may be room
        conn = QuicConn(
            self,
            lambda check: Libp2pQuicConnection(
                configuration=self._quic_configuration(is_client=False),
                certificate_check=check,
                max_inbound_streams=self.config.max_inbound_streams,
                original_destination_connection_id=original_cid,
                retry_source_connection_id=retry_cid,
            ),
            self.config,
            is_initiator=False,
            verifier=self._verifier,
        )
        self._connections.add(conn)
        self._live.add(conn)
        self._handshaking_inbound.add(conn)
        self._admission.opened(source)
        self._sources[conn] = source
        # The client's Initials go to this ID until it learns ours.
        conn._add_cid(header.destination_cid)
        if retry_cid is not None and original_cid not in self._by_cid:
            # A late copy of its first Initial (before the Retry) comes here
            # too, and is dropped, instead of making a second connection.
            conn._add_cid(original_cid)
        conn._datagram_received(data, addr)
        if conn._quic.first_flight:
            # Nothing decrypted: junk that only looked like an Initial.
            conn._abandon(ConnectionClosed("undecryptable Initial"))

    # --- callbacks from connections -----------------------------------------

    def _send_datagram(self, data: bytes, addr: NetworkAddress) -> OSError | None:
        """Send; return the error if the kernel refused the datagram at once."""
        for _ in range(2):
            self._send_error = None
            if self._transport is None or self._transport.is_closing():
                break
            try:
                self._transport.sendto(data, addr)
            except OSError as exc:  # uvloop raises where asyncio reports
                self._socket_error(exc)
            if not (self._icmp and isinstance(self._send_error, ConnectionRefusedError)):
                break
            # That refusal was an ICMP error for an earlier datagram, maybe
            # to another peer, reported on this send instead of sending it;
            # it is consumed now, so send again.
        return self._send_error

    def _send_batch(self, datagrams: list[bytes], addr: NetworkAddress) -> bool:
        """Send ``datagrams`` (all of the first one's size but the last,
        which may be shorter) in one ``sendmsg`` with UDP GSO.  False when
        nothing was sent: no GSO here, the transport holds queued datagrams
        (which must go first), or the socket is full; the caller then sends
        them one by one through the transport, which queues."""
        sock, transport = self._sock, self._transport
        if not self._gso or sock is None or transport is None or transport.is_closing():
            return False
        # Not in typeshed's DatagramTransport; asyncio's and uvloop's have it.
        queued = getattr(transport, "get_write_buffer_size", None)
        if queued is None or queued():
            return False
        segment = struct.pack("=H", len(datagrams[0]))
        try:
            sock.sendmsg([b"".join(datagrams)], [(socket.SOL_UDP, _UDP_SEGMENT, segment)], 0, addr)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in _NO_GSO:
                log.debug("no UDP GSO on %s (%s): sending datagrams one by one",
                          self.local_address, exc)
                self._gso = False
            else:
                self._socket_error(exc)  # e.g. an ICMP error reported on this send
            return False
        return True

    def _socket_error(self, exc: OSError) -> None:
        self._send_error = exc
        if not self._icmp or self._sock is None:
            return
        # Reading the error queue also stops the socket from polling as
        # readable forever.
        errors = read_icmp_errors(self._sock)
        if not errors:
            return
        by_address: dict[tuple[str, int], list[QuicConn]] = {}
        for conn in self._live:
            by_address.setdefault(conn.remote_address, []).append(conn)
        for address, quoted in errors:
            for conn in by_address.get(address, ()):
                if conn._port_unreachable(quoted):
                    log.debug("%r: peer port unreachable", conn)
    def _add_cid(self, cid: bytes, conn: QuicConn) -> None:
        if not self._closing:
            self._by_cid[cid] = conn

    def _remove_cid(self, cid: bytes) -> None:
        self._by_cid.pop(cid, None)

    def _connection_ready(self, conn: QuicConn) -> None:
        if conn in self._handshaking_inbound:
            self._handshaking_inbound.discard(conn)
            source = self._sources.get(conn)
            if source is not None:
                self._admission.established(source)
        self._accept_queue.append(conn)
        self._accept_event.set()

    def _connection_closed(self, conn: QuicConn) -> None:
        self._live.discard(conn)
        source = self._sources.pop(conn, None)
        if source is not None:
            self._admission.closed(source, handshaking=conn in self._handshaking_inbound)
        self._handshaking_inbound.discard(conn)

    def _limit_hit(self, cause: str, now: float, addr: NetworkAddress, detail: str = "") -> None:
        reported = self.limit_hits.hit(cause, now)
        if reported:
            log.warning(
                "inbound QUIC limited on port %d (%s): %d since the last report; "
                "latest from %s port %d%s",
                self.local_address[1], cause, reported, addr[0], addr[1],
                f": {detail}" if detail else "",
            )

    def _connection_terminated(self, conn: QuicConn) -> None:
        self._connections.discard(conn)

    def _socket_closed(self) -> None:
        self._socket_gone.set()

    # --- helpers ------------------------------------------------------------

    def _quic_configuration(self, *, is_client: bool) -> QuicConfiguration:
        config = self.config
        return QuicConfiguration(
            alpn_protocols=[ALPN],
            is_client=is_client,
            connection_id_length=_CID_LENGTH,
            idle_timeout=config.idle_timeout,
            max_data=config.connection_receive_window,
            max_stream_data=config.stream_receive_window,
            max_datagram_size=config.max_datagram_size,
            max_datagram_frame_size=config.max_datagram_frame_size,
            certificate=self._credentials.certificate,
            private_key=self._credentials.private_key,
            # The libp2p checks replace CA verification; no SNI is sent.
            verify_mode=ssl.CERT_NONE,
            server_name=None,
        )

    def _resolve(self, addr: tuple[str, int]) -> NetworkAddress:
        """The socket-address form the kernel reports for ``addr``, so that
        aioquic recognises the peer's replies as coming from it."""
        host, port = addr[0], addr[1]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise DialError(f"{host!r} is not an IP address") from None
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if family != self._family:
            kind = "IPv6" if family == socket.AF_INET6 else "IPv4"
            raise DialError(f"cannot dial {kind} address {host} from {self.local_address[0]}")
        if not 0 < port < 65536:
            raise DialError(f"invalid port {port}")
        try:
            infos = socket.getaddrinfo(
                host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
            )
        except socket.gaierror as exc:
            raise DialError(f"cannot use address {host}: {exc}") from None
        sockaddr: NetworkAddress = infos[0][4]
        return sockaddr

