"""The AutoNAT v2 server on a host: ``/libp2p/autonat/2/dial-request``.

The decisions are ``AutoNATServerCore``'s; this module reads the request,
collects dial data when the core asks for it, and dials back.  The dial
back leaves from a fresh UDP socket with a throw-away identity (the spec
lets a server use another peer ID for dial-backs, and clients check only
the nonce): a new socket means the client's NAT sees an unknown source, so
a mapping the client opened towards our listening port cannot make an
unreachable address look reachable, and the existing connection is never
mistaken for the dial-back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from overlay.errors import OverlayError
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import DIRECT, Connection
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.multiaddrs import QuicAddr
from overlay.nat.autonat_errors import UnexpectedAutoNATMessage
from overlay.nat.autonat_messages import (
    DIAL_BACK_PROTOCOL,
    MAX_MESSAGE_SIZE,
    DialBack,
    DialDataRequest,
    DialDataResponse,
    DialRequest,
    DialResponse,
    DialStatus,
    Message,
    ResponseStatus,
    decode_dial_back_response,
    decode_message,
    encode_dial_back,
    encode_message,
)
from overlay.nat.autonat_server_core import AutoNATServerCore, DialBackPlan, ServerConfig
from overlay.negotiate import select_protocol
from overlay.wire.stream import ByteStream
from overlay.wire.varint import frame, read_frame

__all__ = [
    "DialBackConnector",
    "AutoNATServer",
    "fresh_socket_connector",
    "read_message",
    "write_message",
]

log = logging.getLogger(__name__)

DialBackConnector = Callable[[QuicAddr, PeerId], AbstractAsyncContextManager[Connection]]
"""Opens the fresh connection a dial-back uses, for the ``async with``."""


async def read_message(stream: ByteStream) -> Message:
    data = await read_frame(stream, MAX_MESSAGE_SIZE)
    if data is None:
        raise UnexpectedAutoNATMessage("the stream ended before a message")
    return decode_message(data)


async def write_message(stream: ByteStream, msg: Message) -> None:
    stream.write(frame(encode_message(msg)))
    await stream.drain()


class AutoNATServer:
    """Serves dial requests while ``serving()`` says so.  ``handle`` is the
    stream handler; it raises on a hostile or malformed request, which costs
    the requester only that stream (the host resets it)."""

    def __init__(self, config: ServerConfig, *, serving: Callable[[], bool],
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 connector: DialBackConnector | None = None,
                 dial_timeout: float = 10.0, request_timeout: float = 30.0) -> None:
        self.core = AutoNATServerCore(config, rng)
        self._serving = serving
        self._clock = clock
        self._connector = connector or fresh_socket_connector
        self._dial_timeout = dial_timeout
        self._request_timeout = request_timeout

    async def handle(self, stream: NegotiatedStream) -> None:
        async with asyncio.timeout(self._request_timeout):
            await self._handle(stream)

    async def _handle(self, stream: NegotiatedStream) -> None:
        msg = await read_message(stream)
        if not isinstance(msg, DialRequest):
            raise UnexpectedAutoNATMessage(f"{type(msg).__name__} sent to a server")
        peer = stream.remote_peer
        if not self._serving():
            await self._answer(stream, DialResponse(ResponseStatus.E_REQUEST_REJECTED))
            return
        conn = stream.conn
        address = conn.remote_address if conn.path == DIRECT else None
        decision = self.core.on_request(str(peer), address[0] if address else None, msg,
                                        self._clock())
        if not isinstance(decision, DialBackPlan):
            log.debug("autonat request from %s: %s", peer, decision.reason)
            await self._answer(stream, DialResponse(decision.status))
            return
        try:
            if decision.data_needed:
                await self._collect_data(stream, decision)
            status = await self._dial_back(decision.target, peer, msg.nonce)
            log.debug("autonat dial-back to %s for %s: %s", decision.target, peer, status.name)
            await self._answer(stream, DialResponse(ResponseStatus.OK, decision.addr_idx, status))
        finally:
            self.core.finished(str(peer))

    async def _answer(self, stream: NegotiatedStream, response: DialResponse) -> None:
        await write_message(stream, response)
        stream.write_eof()
        await stream.close()

    async def _collect_data(self, stream: NegotiatedStream, plan: DialBackPlan) -> None:
        await write_message(stream, DialDataRequest(plan.addr_idx, plan.data_needed))
        received = 0
        while received < plan.data_needed:
            msg = await read_message(stream)
            if not isinstance(msg, DialDataResponse):
                raise UnexpectedAutoNATMessage(f"{type(msg).__name__} instead of dial data")
            received += len(msg.data)

    async def _dial_back(self, target: QuicAddr, peer: PeerId, nonce: int) -> DialStatus:
        connected = False
        try:
            async with asyncio.timeout(self._dial_timeout):
                async with self._connector(target, peer) as conn:
                    connected = True
                    stream = await conn.open_stream()
                    await select_protocol(stream, [DIAL_BACK_PROTOCOL])
                    stream.write(frame(encode_dial_back(DialBack(nonce))))
                    await stream.drain()
                    data = await read_frame(stream, 64)
                    if data is None:
                        raise UnexpectedAutoNATMessage("no DialBackResponse")
                    decode_dial_back_response(data)
            return DialStatus.OK
        except (OverlayError, OSError, TimeoutError) as exc:
            log.debug("autonat dial-back to %s failed (connected: %s): %r",
                      target, connected, exc)
            return DialStatus.E_DIAL_BACK_ERROR if connected else DialStatus.E_DIAL_ERROR


@asynccontextmanager
async def fresh_socket_connector(target: QuicAddr, peer: PeerId) -> AsyncIterator[Connection]:
    """A connection to ``target`` (which must prove to be ``peer``) from a
    new socket with a throw-away key; both are closed on leaving."""
    from overlay.transport import QuicEndpoint

    wildcard = "::" if target.family == 6 else "0.0.0.0"
    endpoint = await QuicEndpoint.create(wildcard, 0, Ed25519PrivateKey.generate())
    try:
        conn = await endpoint.dial(target.socket_address, peer)
        try:
            yield conn
        finally:
            conn.close(0, "autonat dial-back done")
    finally:
        await endpoint.aclose()
