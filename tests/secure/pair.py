"""Two pure Noise handshake machines wired back to back at fixed keys."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from overlay.identity.keys import Ed25519PrivateKey, PrivateKey
from overlay.identity.peer_id import PeerId
from overlay.secure.framing import FrameReader
from overlay.secure.noise import HandshakeComplete, NoiseHandshake, Output, SendMessage
from overlay.secure.payload import NoiseExtensions


def x25519(byte: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([byte]) * 32)


def ed25519(byte: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_seed(bytes([byte]) * 32)


def unframe(data: bytes) -> bytes:
    reader = FrameReader()
    reader.feed(data)
    frame = reader.next_frame()
    assert frame is not None and reader.buffered == 0
    return frame


def sends(outputs: list[Output]) -> list[bytes]:
    return [unframe(o.data) for o in outputs if isinstance(o, SendMessage)]


def completes(outputs: list[Output]) -> list[HandshakeComplete]:
    return [o for o in outputs if isinstance(o, HandshakeComplete)]


class HandshakePair:
    """An initiator and a responder with deterministic keys, so every
    message is the same on every run (Ed25519 signatures are deterministic)."""

    def __init__(
        self,
        initiator_key: PrivateKey | None = None,
        responder_key: PrivateKey | None = None,
        *,
        expected_peer: PeerId | None = None,
        initiator_extensions: NoiseExtensions | None = None,
        responder_extensions: NoiseExtensions | None = None,
    ) -> None:
        self.initiator_key = initiator_key or ed25519(1)
        self.responder_key = responder_key or ed25519(2)
        self.initiator = NoiseHandshake(
            self.initiator_key,
            initiator=True,
            expected_peer=expected_peer,
            extensions=initiator_extensions,
            static_key=x25519(3),
            ephemeral_key=x25519(4),
        )
        self.responder = NoiseHandshake(
            self.responder_key,
            initiator=False,
            extensions=responder_extensions,
            static_key=x25519(5),
            ephemeral_key=x25519(6),
        )

    def messages(self) -> tuple[bytes, bytes, bytes]:
        """Run the whole handshake; return the three unframed messages."""
        (msg1,) = sends(self.initiator.start())
        assert self.responder.start() == []
        (msg2,) = sends(self.responder.receive_message(msg1))
        out = self.initiator.receive_message(msg2)
        (msg3,) = sends(out)
        assert len(completes(out)) == 1
        assert len(completes(self.responder.receive_message(msg3))) == 1
        return msg1, msg2, msg3
