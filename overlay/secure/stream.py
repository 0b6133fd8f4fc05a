"""The asyncio driver of the Noise channel over any ``ByteStream``.

``secure_outbound``/``secure_inbound`` run ``NoiseHandshake`` under a
deadline and return a ``SecureStream``, itself a ``ByteStream``.  Noise has
no end-of-stream message: the underlying stream's EOF (after a whole
message) is the secure stream's EOF, so ``write_eof`` is the inner one's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from overlay.errors import ConfigError, OverlayError, RemoteProtocolError, StreamClosed
from overlay.identity.keys import PrivateKey, PublicKey
from overlay.identity.peer_id import PeerId
from overlay.secure.errors import HandshakeTimeout, NoiseHandshakeError, TruncatedFrame
from overlay.secure.framing import LENGTH_PREFIX, MAX_MESSAGE, FrameReader
from overlay.secure.noise import (
    HandshakeComplete,
    NoiseHandshake,
    NoiseTransport,
    SendMessage,
)
from overlay.secure.payload import NoiseExtensions
from overlay.wire.stream import ByteStream

__all__ = ["NoiseConfig", "SecureStream", "secure_outbound", "secure_inbound"]


@dataclass(frozen=True, slots=True)
class NoiseConfig:
    """Settings of one side of the Noise handshake."""

    handshake_timeout: float = 10.0
    """Seconds the whole handshake may take before the stream is reset."""

    stream_muxers: tuple[str, ...] = ()
    """Muxers advertised in the payload's extensions (in preference order);
    when both sides list some, the upgrader picks one without multistream."""

    def __post_init__(self) -> None:
        if not self.handshake_timeout > 0:
            raise ConfigError("handshake_timeout must be positive")


_READ_AHEAD: Final = LENGTH_PREFIX + MAX_MESSAGE
"""Bytes a transport-phase read asks the stream underneath for: whatever
has arrived, up to one whole framed message, in one call (instead of the
length prefix and then the body in as many reads as it took to arrive)."""


async def _read_frame(
    stream: ByteStream, reader: FrameReader, read_ahead: int = 0
) -> bytes | None:
    """The next whole message, or None at a clean EOF (between messages).

    Without ``read_ahead`` it never asks for more than the current frame
    lacks (the handshake: nothing after a message is consumed); with it,
    it asks for up to that many bytes, and the reader keeps what follows."""
    while (frame := reader.next_frame()) is None:
        data = await stream.read(max(reader.want(), read_ahead))
        if not data:
            if reader.buffered:
                raise TruncatedFrame(f"stream ended inside a Noise message ({reader.buffered} bytes)")
            return None
        reader.feed(data)
    return frame


class SecureStream:
    """A Noise-encrypted ``ByteStream`` over another one.

    Reads hold at most one decrypted message (65519 bytes) and a read-ahead
    of ciphertext (``_READ_AHEAD``, one framed message); writes are
    encrypted at once into the inner stream, in messages as full as the
    data allows, and the inner stream's ``drain`` gives the backpressure.
    A tampered, truncated or oversized message resets the inner stream and
    raises a ``NoiseProtocolError`` on this and every later read.
    """

    def __init__(
        self,
        inner: ByteStream,
        transport: NoiseTransport,
        reader: FrameReader,
        info: HandshakeComplete,
        *,
        is_initiator: bool,
    ) -> None:
        self._inner = inner
        self._transport = transport
        self._reader = reader
        self._info = info
        self._is_initiator = is_initiator
        self._plain = b""
        self._pos = 0
        self._eof = False
        self._eof_sent = False
        self._error: RemoteProtocolError | None = None
        self._read_lock = asyncio.Lock()

    @property
    def inner(self) -> ByteStream:
        return self._inner

    @property
    def remote_peer(self) -> PeerId:
        return self._info.remote_peer

    @property
    def remote_public_key(self) -> PublicKey:
        return self._info.remote_public_key

    @property
    def remote_extensions(self) -> NoiseExtensions | None:
        return self._info.remote_extensions

    @property
    def is_initiator(self) -> bool:
        return self._is_initiator

    @property
    def buffered(self) -> int:
        """Decrypted bytes not yet read (at most one message's worth)."""
        return len(self._plain) - self._pos

    async def read(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        async with self._read_lock:
            while self._pos >= len(self._plain):
                if self._error is not None:
                    raise self._error
                if self._eof:
                    return b""
                try:
                    frame = await _read_frame(self._inner, self._reader, _READ_AHEAD)
                    if frame is None:
                        self._eof = True
                        return b""
                    # An empty message is legal (a bare tag): keep reading.
                    self._plain, self._pos = self._transport.decrypt(frame), 0
                except RemoteProtocolError as exc:
                    self._error = exc
                    self._inner.reset()
                    raise
            end = min(len(self._plain), self._pos + max_bytes)
            data = self._plain[self._pos : end]
            self._pos = end
            return data

    async def readexactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = await self.read(n - len(out))
            if not chunk:
                raise StreamClosed(f"EOF after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def write(self, data: bytes) -> None:
        if self._eof_sent:
            raise StreamClosed("write after write_eof")
        if data:
            self._inner.write(self._transport.encrypt(bytes(data)))

    async def drain(self) -> None:
        await self._inner.drain()

    def write_eof(self) -> None:
        self._eof_sent = True
        self._inner.write_eof()

    def reset(self) -> None:
        self._inner.reset()

    async def close(self) -> None:
        self.write_eof()


async def _run(
    stream: ByteStream, machine: NoiseHandshake, config: NoiseConfig
) -> SecureStream:
    reader = FrameReader()
    try:
        async with asyncio.timeout(config.handshake_timeout):
            outputs = machine.start()
            while True:
                for out in outputs:
                    if isinstance(out, SendMessage):
                        stream.write(out.data)
                        await stream.drain()
                    else:
                        return SecureStream(
                            stream,
                            machine.transport(),
                            reader,
                            out,
                            is_initiator=machine.is_initiator,
                        )
                frame = await _read_frame(stream, reader)
                if frame is None:
                    raise NoiseHandshakeError("stream ended during the Noise handshake")
                outputs = machine.receive_message(frame)
    except TimeoutError:
        stream.reset()
        raise HandshakeTimeout(
            f"Noise handshake not complete after {config.handshake_timeout} s"
        ) from None
    except OverlayError:
        # A half-done handshake leaves the stream useless to anyone.
        stream.reset()
        raise


async def secure_outbound(
    stream: ByteStream,
    local_key: PrivateKey,
    expected_peer: PeerId | None = None,
    *,
    config: NoiseConfig | None = None,
) -> SecureStream:
    """Run the handshake as initiator; raises ``PeerIdMismatch`` when the
    remote proves another peer than ``expected_peer``."""
    config = config or NoiseConfig()
    machine = NoiseHandshake(
        local_key,
        initiator=True,
        expected_peer=expected_peer,
        extensions=_extensions(config),
    )
    return await _run(stream, machine, config)


async def secure_inbound(
    stream: ByteStream, local_key: PrivateKey, *, config: NoiseConfig | None = None
) -> SecureStream:
    """Run the handshake as responder; the remote's peer ID is on the result."""
    config = config or NoiseConfig()
    machine = NoiseHandshake(local_key, initiator=False, extensions=_extensions(config))
    return await _run(stream, machine, config)


def _extensions(config: NoiseConfig) -> NoiseExtensions | None:
    return NoiseExtensions(stream_muxers=config.stream_muxers) if config.stream_muxers else None
