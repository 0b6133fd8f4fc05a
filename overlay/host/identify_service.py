"""The identify service: ``/ipfs/id/1.0.0`` and ``/ipfs/id/push/1.0.0`` on a host.

It asks every new connection who is at the other end, answers the same
question about us, and pushes our new state to connected peers when our
protocols or addresses change (coalesced).  What it learns goes into the
peerstore and to the host's listeners (``identified``); kad enters peers
into its table from there.  The codec is ``overlay.host.identify``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Protocol

from multiaddr import Multiaddr

from overlay.errors import LocalProtocolError, OverlayError
from overlay.host.addrs import socket_to_multiaddr
from overlay.host.config import HostConfig
from overlay.host.events import HostListener
from overlay.host.identify import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    IdentifyInfo,
    build_identify,
    parse_identify,
    read_identify,
    write_identify,
)
from overlay.host.peerstore import ObservedAddrs, Peerstore
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.identity import PeerId, PrivateKey
from overlay.identity.peer_record import MAX_PEER_RECORD_ADDRS, PeerRecord, seal_peer_record
from overlay.supervisor import Job, Supervisor

__all__ = ["IdentifyHost", "IdentifyService"]

log = logging.getLogger(__name__)

_MAX_PUSH_ROUNDS = 8


class IdentifyHost(Protocol):
    """The slice of ``overlay.host.Host`` the identify service uses."""

    @property
    def peer_id(self) -> PeerId: ...

    @property
    def peerstore(self) -> Peerstore: ...

    @property
    def observed_addrs(self) -> ObservedAddrs: ...

    def advertised_addrs(self) -> list[Multiaddr]: ...

    def protocols(self) -> list[str]: ...

    def peers(self) -> list[PeerId]: ...

    def best_connection(self, peer_id: PeerId) -> Connection | None: ...

    async def new_stream(self, peer_id: PeerId, protocols: Sequence[str]) -> NegotiatedStream: ...

    async def open_stream_on(
        self, conn: Connection, protocols: Sequence[str], *, lazy: bool = False
    ) -> NegotiatedStream: ...

    def set_stream_handler(
        self, protocol: str, handler: Callable[[NegotiatedStream], Awaitable[None]]
    ) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    def add_listener(self, listener: HostListener) -> None: ...

    def remove_listener(self, listener: HostListener) -> None: ...

    def emit_identified(self, peer: PeerId, info: IdentifyInfo) -> None: ...


class IdentifyService:
    """``async with IdentifyService(host, key, config):`` serves identify on
    ``host`` and identifies each connection it makes or accepts."""

    def __init__(self, host: IdentifyHost, private_key: PrivateKey, config: HostConfig) -> None:
        self._host = host
        self._key = private_key
        self._config = config
        self._sup: Supervisor | None = None
        self._push_wanted = False
        self._push_running = False
        self._record: tuple[tuple[Multiaddr, ...], bytes] | None = None
        self._listener = HostListener(opened=self._on_opened, changed=self.schedule_push)

    # -- lifetime ------------------------------------------------------------

    async def __aenter__(self) -> IdentifyService:
        if self._sup is not None:
            raise LocalProtocolError("the identify service is already running")
        self._sup = await Supervisor("identify", log).__aenter__()
        self._host.set_stream_handler(IDENTIFY_PROTOCOL, self._handle_identify)
        self._host.set_stream_handler(IDENTIFY_PUSH_PROTOCOL, self._handle_push)
        self._host.add_listener(self._listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._host.remove_listener(self._listener)
        self._host.remove_stream_handler(IDENTIFY_PROTOCOL)
        self._host.remove_stream_handler(IDENTIFY_PUSH_PROTOCOL)
        sup, self._sup = self._sup, None
        if sup is not None:
            await sup.aclose()

    def _spawn(self, job: Job, what: str) -> None:
        # Connections opened while the service stops are not identified.
        if self._sup is not None and self._sup.running:
            self._sup.spawn(job, what)

    # -- asking ----------------------------------------------------------------

    def _on_opened(self, conn: Connection) -> None:
        self._spawn(lambda: self._auto_identify(conn), f"identify {conn.remote_peer}")

    async def _auto_identify(self, conn: Connection) -> None:
        await self.identify_connection(conn)

    async def identify(self, peer_id: PeerId) -> IdentifyInfo:
        """Ask ``peer_id`` who it is (dialing if needed); updates the peerstore."""
        stream = await self._host.new_stream(peer_id, [IDENTIFY_PROTOCOL])
        return await self._read_answer(stream)

    async def identify_connection(self, conn: Connection) -> IdentifyInfo:
        """Identify over ``conn`` itself (each new connection is asked once).
        Negotiated lazily: the answer comes one round trip after the open,
        not two, which is what DCUtR's unilateral dial waits for."""
        stream = await self._host.open_stream_on(conn, [IDENTIFY_PROTOCOL], lazy=True)
        return await self._read_answer(stream)

    async def _read_answer(self, stream: NegotiatedStream) -> IdentifyInfo:
        try:
            async with asyncio.timeout(self._config.identify_timeout):
                data = await read_identify(stream, self._config.identify_max_size)
        except BaseException:
            stream.reset()
            raise
        # Close our side too: a half-open stream would keep a relayed
        # connection looking busy after DCUtR replaced it.
        try:
            stream.write_eof()
        except OverlayError:
            pass  # the peer reset it after answering: nothing to close
        info = self._parse(data, stream.remote_peer)
        self._apply(info, push=False)
        return info

    def _parse(self, data: bytes, peer: PeerId) -> IdentifyInfo:
        return parse_identify(
            data,
            peer,
            max_addrs=self._config.max_addrs_per_peer,
            max_protocols=self._config.max_protocols_per_peer,
        )

    def _apply(self, info: IdentifyInfo, *, push: bool) -> None:
        peer, store = info.peer_id, self._host.peerstore
        if info.public_key is not None:
            store.set_public_key(peer, info.public_key)
        if info.record_seq is not None:
            if store.accept_record_seq(peer, info.record_seq):
                store.set_addrs(peer, list(info.listen_addrs))
        elif info.has_listen_addrs or not push:
            store.add_addrs(peer, list(info.listen_addrs))
        if info.has_protocols or not push:
            store.set_protocols(peer, list(info.protocols))
        store.set_versions(peer, info.agent_version, info.protocol_version)
        if info.observed_addr is not None:
            store.set_observed_addr(peer, info.observed_addr)
            self._host.observed_addrs.record(peer, info.observed_addr)
        self._host.emit_identified(peer, info)

    # -- answering -------------------------------------------------------------

    def message(self, observed: Multiaddr | None) -> bytes:
        """Our Identify message, with ``observed`` as the peer's address."""
        addrs = tuple(self._host.advertised_addrs())
        if self._record is None or self._record[0] != addrs:
            # Wall-clock microseconds keep the sequence rising across restarts.
            record = PeerRecord(
                self._host.peer_id,
                time.time_ns() // 1000,
                tuple(addr.to_bytes() for addr in addrs[:MAX_PEER_RECORD_ADDRS]),
            )
            self._record = (addrs, seal_peer_record(self._key, record))
        return build_identify(
            self._key,
            listen_addrs=addrs,
            protocols=self._host.protocols(),
            observed_addr=observed,
            agent_version=self._config.agent_version,
            protocol_version=self._config.protocol_version,
            signed_peer_record=self._record[1],
        )

    @staticmethod
    def _observed(conn: Connection) -> Multiaddr | None:
        address = conn.remote_address
        if address is None:
            return None  # relayed: the relay, not the peer, sees our address
        try:
            return socket_to_multiaddr(address[0], address[1])
        except ValueError:
            return None

    async def _handle_identify(self, stream: NegotiatedStream) -> None:
        message = self.message(self._observed(stream.conn))
        async with asyncio.timeout(self._config.identify_timeout):
            await write_identify(stream, message)

    async def _handle_push(self, stream: NegotiatedStream) -> None:
        async with asyncio.timeout(self._config.identify_timeout):
            data = await read_identify(stream, self._config.identify_max_size)
        stream.write_eof()  # both sides closed: the stream is gone, not half-open
        self._apply(self._parse(data, stream.remote_peer), push=True)

    # -- pushing ---------------------------------------------------------------

    def schedule_push(self) -> None:
        """Push identify to connected peers; coalesces bursts of changes."""
        if self._sup is None:
            return
        self._push_wanted = True
        if not self._push_running:
            self._push_running = True
            self._spawn(self._push_all, "identify push")

    async def _push_all(self) -> None:
        try:
            for _ in range(_MAX_PUSH_ROUNDS):  # each round sends the newest state
                if not self._push_wanted:
                    return
                self._push_wanted = False
                host = self._host
                targets = [
                    conn
                    for peer in host.peers()
                    if host.peerstore.supports(peer, IDENTIFY_PUSH_PROTOCOL)
                    and (conn := host.best_connection(peer)) is not None
                ]
                async with asyncio.TaskGroup() as tg:
                    for conn in targets:
                        tg.create_task(self._push_one(conn))
        finally:
            self._push_running = False

    async def _push_one(self, conn: Connection) -> None:
        try:
            stream = await self._host.open_stream_on(conn, [IDENTIFY_PUSH_PROTOCOL])
            async with asyncio.timeout(self._config.identify_timeout):
                await write_identify(stream, self.message(self._observed(conn)))
        except (OverlayError, TimeoutError) as exc:
            log.debug("identify push to %s failed: %r", conn.remote_peer, exc)
