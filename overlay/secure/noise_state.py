"""The Noise Protocol Framework objects for ``Noise_XX_25519_ChaChaPoly_SHA256``.

CipherState, SymmetricState and HandshakeState as the Noise specification
(revision 34, section 5) defines them, restricted to the one protocol libp2p
uses: X25519, ChaCha20-Poly1305 and SHA-256.  Pure: no I/O, no clocks; the
only randomness is key generation, which comes from ``cryptography`` unless
the caller injects keys (the test vectors do).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from overlay.errors import LocalProtocolError
from overlay.secure.errors import DecryptionFailed, NoiseHandshakeError, NonceExhausted

__all__ = [
    "PROTOCOL_NAME",
    "DHLEN",
    "TAGLEN",
    "CipherState",
    "SymmetricState",
    "XXHandshakeState",
    "public_bytes",
]

PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
DHLEN: Final = 32
HASHLEN: Final = 32
TAGLEN: Final = 16
# Nonce 2^64-1 is reserved by the spec (for rekey); reaching it ends the key.
_MAX_NONCE: Final = (1 << 64) - 1

# Who writes which tokens, message by message: the XX pattern.
_XX: Final = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    # Noise's HKDF (section 4.3): HMAC-based, two outputs, no info string.
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    return out1, _hmac(temp, out1 + b"\x02")


class CipherState:
    """A ChaCha20-Poly1305 key and its 64-bit message counter."""

    __slots__ = ("_aead", "_nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self._nonce = 0

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    @property
    def nonce(self) -> int:
        return self._nonce

    def _next_nonce(self) -> bytes:
        if self._nonce >= _MAX_NONCE:
            raise NonceExhausted("2^64-1 messages under one Noise key")
        # ChaChaPoly nonce: 32 zero bits, then the counter little-endian.
        return b"\x00\x00\x00\x00" + self._nonce.to_bytes(8, "little")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        out = self._aead.encrypt(self._next_nonce(), plaintext, ad)
        self._nonce += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        nonce = self._next_nonce()
        if len(ciphertext) < TAGLEN:
            raise DecryptionFailed(f"message of {len(ciphertext)} bytes is shorter than its tag")
        try:
            out = self._aead.decrypt(nonce, ciphertext, ad)
        except InvalidTag:
            raise DecryptionFailed(f"message {self._nonce} failed authentication") from None
        self._nonce += 1
        return out


class SymmetricState:
    """The chaining key and handshake hash, with the cipher they key."""

    __slots__ = ("_ck", "_h", "cipher")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = hashlib.sha256(protocol_name).digest()
        self._h = h
        self._ck = h
        self.cipher = CipherState()

    @property
    def handshake_hash(self) -> bytes:
        return self._h

    def mix_key(self, ikm: bytes) -> None:
        self._ck, temp_k = _hkdf2(self._ck, ikm)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self._h = hashlib.sha256(self._h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf2(self._ck, b"")
        return CipherState(k1), CipherState(k2)


class XXHandshakeState:
    """One side of an XX handshake: ``write_message``/``read_message`` in
    turn, three messages in all, then ``split()`` for the transport keys.

    Errors caused by the remote's bytes are ``NoiseHandshakeError``; calling
    out of turn is a ``LocalProtocolError``.
    """

    __slots__ = ("_initiator", "_s", "_e", "_rs", "_re", "_sym", "_index")

    def __init__(
        self,
        initiator: bool,
        static_key: X25519PrivateKey,
        *,
        ephemeral_key: X25519PrivateKey | None = None,
        prologue: bytes = b"",
    ) -> None:
        self._initiator = initiator
        self._s = static_key
        self._e = ephemeral_key
        self._rs: bytes | None = None
        self._re: bytes | None = None
        self._sym = SymmetricState(PROTOCOL_NAME)
        self._sym.mix_hash(prologue)
        self._index = 0

    @property
    def message_index(self) -> int:
        """How many handshake messages were written or read so far."""
        return self._index

    @property
    def is_finished(self) -> bool:
        return self._index == len(_XX)

    @property
    def our_turn(self) -> bool:
        return not self.is_finished and (self._index % 2 == 0) == self._initiator

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        return self._sym.handshake_hash

    @property
    def local_static(self) -> bytes:
        return public_bytes(self._s)

    def _dh(self, token: str) -> bytes:
        # The first letter is the initiator's key, the second the responder's.
        ours, theirs = (token[0], token[1]) if self._initiator else (token[1], token[0])
        local = self._s if ours == "s" else self._e
        remote = self._rs if theirs == "s" else self._re
        if local is None or remote is None:
            raise LocalProtocolError(f"{token} before both keys are known")
        try:
            return local.exchange(X25519PublicKey.from_public_bytes(remote))
        except ValueError:
            # cryptography refuses an all-zero result: a low-order point.
            raise NoiseHandshakeError("remote sent a low-order X25519 key") from None

    def write_message(self, payload: bytes) -> bytes:
        if not self.our_turn:
            raise LocalProtocolError(f"not our turn to write handshake message {self._index + 1}")
        out = bytearray()
        for token in _XX[self._index]:
            if token == "e":
                if self._e is None:
                    self._e = X25519PrivateKey.generate()
                e_pub = public_bytes(self._e)
                out += e_pub
                self._sym.mix_hash(e_pub)
            elif token == "s":
                out += self._sym.encrypt_and_hash(public_bytes(self._s))
            else:
                self._sym.mix_key(self._dh(token))
        out += self._sym.encrypt_and_hash(payload)
        self._index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if self.is_finished or self.our_turn:
            raise LocalProtocolError(f"not expecting handshake message {self._index + 1}")
        number = self._index + 1
        view = memoryview(message)
        for token in _XX[self._index]:
            if token in ("e", "s"):
                size = DHLEN + (TAGLEN if token == "s" and self._sym.cipher.has_key else 0)
                if len(view) < size:
                    raise NoiseHandshakeError(
                        f"handshake message {number} is truncated ({len(message)} bytes)"
                    )
                chunk, view = bytes(view[:size]), view[size:]
                if token == "e":
                    self._re = chunk
                    self._sym.mix_hash(chunk)
                else:
                    self._rs = self._decrypt(chunk, number)
            else:
                self._sym.mix_key(self._dh(token))
        payload = self._decrypt(bytes(view), number)
        self._index += 1
        return payload

    def _decrypt(self, ciphertext: bytes, number: int) -> bytes:
        try:
            return self._sym.decrypt_and_hash(ciphertext)
        except DecryptionFailed:
            raise NoiseHandshakeError(
                f"handshake message {number} failed authentication"
            ) from None

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) cipher states for the transport phase."""
        if not self.is_finished:
            raise LocalProtocolError("split before the handshake finished")
        c1, c2 = self._sym.split()
        return (c1, c2) if self._initiator else (c2, c1)
