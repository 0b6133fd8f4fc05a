"""The libp2p Noise secure channel (``/noise``) as a pure state machine.

``NoiseHandshake`` runs the XX handshake of libp2p/specs ``noise/README.md``
for either side: messages in (whole, unframed: ``FrameReader`` splits the
stream), actions out (``SendMessage`` with the framed bytes to write, then
``HandshakeComplete`` with the remote's verified identity).  The responder
carries its signed payload in message 2, the initiator in message 3; message
1 is the initiator's bare ephemeral key.  After completion ``transport()``
returns the ``NoiseTransport`` that encrypts and decrypts the data phase.

The Noise static key is a fresh X25519 key per handshake unless injected;
it is authenticated by the identity key's signature in the payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from overlay.errors import LocalProtocolError, PeerIdMismatch
from overlay.identity.keys import PrivateKey, PublicKey
from overlay.identity.peer_id import PeerId
from overlay.secure.errors import NoiseHandshakeError
from overlay.secure.framing import LENGTH_PREFIX, MAX_MESSAGE, encode_frame
from overlay.secure.noise_state import DHLEN, TAGLEN, CipherState, XXHandshakeState
from overlay.secure.payload import (
    NoiseExtensions,
    decode_payload,
    make_payload,
    verify_payload,
)

__all__ = [
    "PROTOCOL_ID",
    "MAX_PLAINTEXT",
    "SendMessage",
    "HandshakeComplete",
    "Output",
    "NoiseHandshake",
    "NoiseTransport",
]

PROTOCOL_ID: Final = "/noise"
MAX_PLAINTEXT: Final = MAX_MESSAGE - TAGLEN
"""The most plaintext one transport message carries (65519 bytes)."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Write ``data`` (already length-prefixed) to the stream."""

    data: bytes


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The remote proved ``remote_peer``; the transport phase may begin."""

    remote_peer: PeerId
    remote_public_key: PublicKey
    remote_extensions: NoiseExtensions | None
    handshake_hash: bytes


Output = SendMessage | HandshakeComplete


class NoiseHandshake:
    """One side of the libp2p XX handshake.

    The initiator calls ``start()`` (message 1 to send), then feeds message
    2 to ``receive_message`` and gets message 3 plus ``HandshakeComplete``.
    The responder feeds message 1 (gets message 2), then message 3 (gets
    ``HandshakeComplete``).  Remote faults raise ``NoiseHandshakeError``
    subclasses or ``PeerIdMismatch``; after a fault the machine is dead.
    """

    __slots__ = (
        "_identity",
        "_initiator",
        "_expected",
        "_extensions",
        "_state",
        "_started",
        "_failed",
        "_complete",
    )

    def __init__(
        self,
        identity: PrivateKey,
        *,
        initiator: bool,
        expected_peer: PeerId | None = None,
        extensions: NoiseExtensions | None = None,
        static_key: X25519PrivateKey | None = None,
        ephemeral_key: X25519PrivateKey | None = None,
    ) -> None:
        if expected_peer is not None and not initiator:
            raise LocalProtocolError("only the initiator knows whom it expects")
        self._identity = identity
        self._initiator = initiator
        self._expected = expected_peer
        self._extensions = extensions
        self._state = XXHandshakeState(
            initiator,
            static_key if static_key is not None else X25519PrivateKey.generate(),
            ephemeral_key=ephemeral_key,
        )
        self._started = False
        self._failed = False
        self._complete: HandshakeComplete | None = None

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def result(self) -> HandshakeComplete | None:
        return self._complete

    def start(self) -> list[Output]:
        """Begin: the initiator's message 1; nothing for the responder."""
        if self._started:
            raise LocalProtocolError("handshake already started")
        self._started = True
        if not self._initiator:
            return []
        # libp2p puts no payload in message 1: nothing there is secret yet.
        return [SendMessage(encode_frame(self._state.write_message(b"")))]

    def receive_message(self, message: bytes) -> list[Output]:
        """Process one handshake message (without its length prefix)."""
        if not self._started:
            raise LocalProtocolError("receive_message before start()")
        if self._failed or self._complete is not None or self._state.our_turn:
            raise LocalProtocolError("no handshake message is expected now")
        try:
            return self._receive(message)
        except BaseException:
            self._failed = True
            raise

    def _receive(self, message: bytes) -> list[Output]:
        index = self._state.message_index
        if index == 0 and len(message) != DHLEN:
            # The spec keeps message 1 payload-free; anything else is a
            # confused or hostile initiator (or not message 1 at all).
            raise NoiseHandshakeError(
                f"handshake message 1 must be {DHLEN} bytes, got {len(message)}"
            )
        payload = self._state.read_message(message)
        if index == 0:
            msg2 = self._state.write_message(self._our_payload())
            return [SendMessage(encode_frame(msg2))]
        peer, key, extensions = self._verify(payload)
        if index == 1:
            msg3 = self._state.write_message(self._our_payload())
            out: list[Output] = [SendMessage(encode_frame(msg3))]
        else:
            out = []
        # Only now is the transcript, and so the handshake hash, final.
        self._complete = HandshakeComplete(peer, key, extensions, self._state.handshake_hash)
        return [*out, self._complete]

    def _our_payload(self) -> bytes:
        return make_payload(self._identity, self._state.local_static, self._extensions)

    def _verify(self, raw_payload: bytes) -> tuple[PeerId, PublicKey, NoiseExtensions | None]:
        remote_static = self._state.remote_static
        if remote_static is None:  # XX always sends s before the payload
            raise LocalProtocolError("payload before the remote static key")
        payload = decode_payload(raw_payload)
        verify_payload(payload, remote_static)
        peer = PeerId.from_public_key(payload.identity_key)
        if self._expected is not None and peer != self._expected:
            raise PeerIdMismatch(str(self._expected), str(peer))
        return peer, payload.identity_key, payload.extensions

    def transport(self) -> NoiseTransport:
        """The transport-phase ciphers; only after ``HandshakeComplete``."""
        if self._complete is None:
            raise LocalProtocolError("the handshake is not complete")
        send, recv = self._state.split()
        return NoiseTransport(send, recv)


class NoiseTransport:
    """Encrypts outgoing data into framed transport messages and decrypts
    incoming messages, each under its own key and nonce counter."""

    __slots__ = ("_send", "_recv")

    def __init__(self, send: CipherState, recv: CipherState) -> None:
        self._send = send
        self._recv = recv

    def encrypt(self, data: bytes) -> bytes:
        """Framed ciphertext of ``data``, split into messages of at most
        ``MAX_PLAINTEXT`` bytes (all full but the last); nothing for empty data."""
        size = len(data)
        if size <= MAX_PLAINTEXT:
            if not size:
                return b""
            return encode_frame(self._send.encrypt_with_ad(b"", data))
        parts: list[bytes] = []
        with memoryview(data) as view:
            for start in range(0, size, MAX_PLAINTEXT):
                message = self._send.encrypt_with_ad(b"", view[start : start + MAX_PLAINTEXT])
                parts.append(len(message).to_bytes(LENGTH_PREFIX, "big"))
                parts.append(message)
        return b"".join(parts)

    def decrypt(self, message: bytes) -> bytes:
        """Plaintext of one transport message (without its length prefix);
        raises ``DecryptionFailed``."""
        return self._recv.decrypt_with_ad(b"", message)
