"""The hop and stop handlers against arbitrary bytes over in-memory
streams: each request gets an answer or its stream closed, and nothing but
a typed error ever leaves a handler."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import DialError, OverlayError
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.relay.client import RelayClient
from overlay.relay.messages import HopType, StopType, decode_hop, decode_stop
from overlay.relay.server import RelayServer
from overlay.wire.memory import MemoryStream, memory_stream_pair
from overlay.wire.varint import encode_uvarint, read_frame

KEY = Ed25519PrivateKey.generate()
ME = PeerId.from_public_key(KEY.public_key())
PEER = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


class FakeHost:
    peer_id = ME

    def set_stream_handler(self, protocol: str, handler: Any) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    def add_listener(self, listener: Any) -> None: ...

    def remove_listener(self, listener: Any) -> None: ...

    def advertised_addrs(self) -> list[Any]:
        return []

    async def new_stream(self, peer_id: PeerId, protocols: Any) -> Any:
        raise DialError("no such peer here")


@dataclass
class Conn:
    remote_address: tuple[str, int] = ("10.0.0.1", 4001)
    path: str = "direct"


class Stream:
    """A MemoryStream with the negotiated-stream extras the handlers read."""

    def __init__(self, inner: MemoryStream) -> None:
        self._inner = inner
        self.remote_peer = PEER
        self.conn = Conn()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def drive(handler: Any, data: bytes) -> bytes | None:
    ours, theirs = memory_stream_pair()
    theirs.write(data)
    theirs.write_eof()
    try:
        async with asyncio.timeout(5):
            await handler(Stream(ours))
    except OverlayError:
        return None
    async with asyncio.timeout(5):
        return await read_frame(theirs, 4096)


framed = st.binary(max_size=300).map(lambda b: encode_uvarint(len(b)) + b)


@settings(max_examples=150, deadline=None)
@given(st.one_of(framed, st.binary(max_size=300)))
def test_hop_handler_answers_or_drops(data: bytes) -> None:
    server = RelayServer(FakeHost(), KEY)  # type: ignore[arg-type]
    answer = asyncio.run(drive(server.handle_hop, data))
    if answer is not None:
        reply = decode_hop(answer)
        assert reply.type is HopType.STATUS and reply.status is not None


@settings(max_examples=150, deadline=None)
@given(st.one_of(framed, st.binary(max_size=300)))
def test_stop_handler_answers_or_drops(data: bytes) -> None:
    async def run() -> bytes | None:
        client = RelayClient(FakeHost())  # type: ignore[arg-type]
        return await drive(client.handle_stop, data)

    answer = asyncio.run(run())
    if answer is not None:
        reply = decode_stop(answer)
        # Nobody holds a reservation here: nothing is ever accepted.
        assert reply.type is StopType.STATUS and reply.status != 100
