"""The Noise framework objects against the cacophony test vector, and the
libp2p handshake machine at fixed keys: success for every identity key type,
and a typed error for every fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from overlay.errors import LocalProtocolError, MessageTooLarge, PeerIdMismatch
from overlay.identity.keys import (
    EcdsaPrivateKey,
    KeyType,
    PrivateKey,
    RsaPrivateKey,
    Secp256k1PrivateKey,
    encode_key_message,
)
from overlay.identity.peer_id import PeerId
from overlay.secure.errors import (
    DecryptionFailed,
    InvalidHandshakePayload,
    InvalidIdentityKey,
    InvalidStaticKeySignature,
    NoiseHandshakeError,
)
from overlay.secure.framing import MAX_MESSAGE, FrameReader, encode_frame
from overlay.secure.noise import MAX_PLAINTEXT, NoiseHandshake
from overlay.secure.noise_state import PROTOCOL_NAME, XXHandshakeState, public_bytes
from overlay.secure.payload import STATIC_KEY_DOMAIN, NoiseExtensions, make_payload
from overlay.wire.pb import noise_pb2

from .pair import HandshakePair, completes, ed25519, sends, unframe, x25519

VECTORS = Path(__file__).parent / "vectors" / "cacophony_xx_25519_chachapoly_sha256.json"


def test_protocol_name_is_exactly_one_hash_long() -> None:
    # So h starts as the name itself, zero-padded, not its hash.
    assert PROTOCOL_NAME == b"Noise_XX_25519_ChaChaPoly_SHA256" and len(PROTOCOL_NAME) == 32


def test_cacophony_vector() -> None:
    (vector,) = json.loads(VECTORS.read_text())
    assert vector["protocol_name"] == PROTOCOL_NAME.decode()
    h = bytes.fromhex
    init = XXHandshakeState(
        True,
        X25519PrivateKey.from_private_bytes(h(vector["init_static"])),
        ephemeral_key=X25519PrivateKey.from_private_bytes(h(vector["init_ephemeral"])),
        prologue=h(vector["init_prologue"]),
    )
    resp = XXHandshakeState(
        False,
        X25519PrivateKey.from_private_bytes(h(vector["resp_static"])),
        ephemeral_key=X25519PrivateKey.from_private_bytes(h(vector["resp_ephemeral"])),
        prologue=h(vector["resp_prologue"]),
    )
    messages = vector["messages"]
    for n, message in enumerate(messages[:3]):
        writer, reader = (init, resp) if n % 2 == 0 else (resp, init)
        ciphertext = writer.write_message(h(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"], f"handshake message {n + 1}"
        assert reader.read_message(ciphertext) == h(message["payload"])
    assert init.is_finished and resp.is_finished
    assert init.handshake_hash.hex() == vector["handshake_hash"]
    assert resp.handshake_hash.hex() == vector["handshake_hash"]
    assert resp.remote_static == init.local_static
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    # Transport messages keep alternating: the responder sends message 4.
    for n, message in enumerate(messages[3:], start=3):
        send, recv = (i_send, r_recv) if n % 2 == 0 else (r_send, i_recv)
        ciphertext = send.encrypt_with_ad(b"", h(message["payload"]))
        assert ciphertext.hex() == message["ciphertext"], f"transport message {n + 1}"
        assert recv.decrypt_with_ad(b"", ciphertext) == h(message["payload"])


def test_full_handshake_at_fixed_keys_is_deterministic() -> None:
    first = HandshakePair()
    m1, m2, m3 = first.messages()
    assert m1 == public_bytes(x25519(4))  # the bare ephemeral key
    assert HandshakePair().messages() == (m1, m2, m3)
    i_done = first.initiator.result
    r_done = first.responder.result
    assert i_done is not None and r_done is not None
    assert i_done.remote_peer == PeerId.from_public_key(ed25519(2).public_key())
    assert r_done.remote_peer == PeerId.from_public_key(ed25519(1).public_key())
    assert i_done.remote_public_key == ed25519(2).public_key()
    assert i_done.handshake_hash == r_done.handshake_hash
    assert i_done.remote_extensions is None


@pytest.fixture(scope="module")
def rsa_key() -> RsaPrivateKey:
    return RsaPrivateKey.generate(2048)


@pytest.mark.parametrize("kind", ["ed25519", "secp256k1", "ecdsa", "rsa"])
def test_every_identity_key_type(kind: str, rsa_key: RsaPrivateKey) -> None:
    keys: dict[str, PrivateKey] = {
        "ed25519": ed25519(9),
        "secp256k1": Secp256k1PrivateKey.generate(),
        "ecdsa": EcdsaPrivateKey.generate(),
        "rsa": rsa_key,
    }
    key = keys[kind]
    # The odd key type on either side, and the dialer pins it.
    pair = HandshakePair(key, key, expected_peer=PeerId.from_public_key(key.public_key()))
    pair.messages()
    assert pair.initiator.result is not None and pair.responder.result is not None
    assert pair.initiator.result.remote_public_key == key.public_key()
    assert pair.responder.result.remote_public_key == key.public_key()


def test_extensions_reach_the_other_side_only_after_verification() -> None:
    ours = NoiseExtensions(stream_muxers=("/yamux/1.0.0",))
    theirs = NoiseExtensions(stream_muxers=("/yamux/1.0.0", "/mplex/6.7.0"), webtransport_certhashes=(b"\x12\x20" + b"h" * 32,))
    pair = HandshakePair(initiator_extensions=ours, responder_extensions=theirs)
    pair.messages()
    assert pair.initiator.result is not None and pair.responder.result is not None
    assert pair.initiator.result.remote_extensions == theirs
    assert pair.responder.result.remote_extensions == ours


def test_frame_reader_cuts_several_fed_frames_in_order() -> None:
    bodies = [b"a" * 5, b"", b"b" * 300, b"c"]
    wire = b"".join(encode_frame(body) for body in bodies)
    reader = FrameReader()
    reader.feed(wire[:9])  # the first frame and the (empty) second one
    assert reader.next_frame() == bodies[0]
    assert reader.buffered == 2
    reader.feed(wire[9:20])
    assert reader.next_frame() == bodies[1]
    assert reader.next_frame() is None
    assert reader.want() == 2 + 300 - 11  # 11 bytes of the third are here
    reader.feed(wire[20:])
    assert [reader.next_frame(), reader.next_frame(), reader.next_frame()] == [
        bodies[2], bodies[3], None]
    assert reader.buffered == 0 and reader.want() == 2


def test_transport_round_trip_and_chunking() -> None:
    pair = HandshakePair()
    pair.messages()
    a, b = pair.initiator.transport(), pair.responder.transport()
    data = bytes(range(256)) * 800  # 204800 bytes: four messages
    wire = a.encrypt(data)
    reader = FrameReader()
    reader.feed(wire)
    frames = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    assert [len(f) for f in frames] == [MAX_MESSAGE] * 3 + [len(data) - 3 * MAX_PLAINTEXT + 16]
    assert b"".join(b.decrypt(f) for f in frames) == data
    assert a.encrypt(b"") == b""
    # And the other direction uses the other key.
    assert a.decrypt(unframe(b.encrypt(b"pong"))) == b"pong"


def test_transport_tampered_replayed_and_reordered_messages() -> None:
    pair = HandshakePair()
    pair.messages()
    a, b = pair.initiator.transport(), pair.responder.transport()
    first, second = unframe(a.encrypt(b"one")), unframe(a.encrypt(b"two"))
    tampered = bytearray(first)
    tampered[0] ^= 1
    with pytest.raises(DecryptionFailed):
        b.decrypt(bytes(tampered))
    with pytest.raises(DecryptionFailed):
        b.decrypt(second)  # out of order: the nonce says message 0
    assert b.decrypt(first) == b"one"
    with pytest.raises(DecryptionFailed):
        b.decrypt(first)  # replay
    with pytest.raises(DecryptionFailed):
        b.decrypt(b"short")


def test_wrong_peer_is_peer_id_mismatch_and_sends_no_message_3() -> None:
    other = PeerId.from_public_key(ed25519(7).public_key())
    pair = HandshakePair(expected_peer=other)
    (m1,) = sends(pair.initiator.start())
    pair.responder.start()
    (m2,) = sends(pair.responder.receive_message(m1))
    with pytest.raises(PeerIdMismatch) as info:
        pair.initiator.receive_message(m2)
    assert info.value.expected == str(other)
    assert pair.initiator.result is None
    with pytest.raises(LocalProtocolError):
        pair.initiator.receive_message(m2)  # a failed machine stays failed


def _forged_message_2(m1: bytes, payload: bytes) -> bytes:
    """Message 2 from a responder that puts ``payload`` in it."""
    state = XXHandshakeState(False, x25519(5), ephemeral_key=x25519(6))
    state.read_message(m1)
    return state.write_message(payload)


def _run_against(payload: bytes) -> None:
    initiator = NoiseHandshake(ed25519(1), initiator=True)
    (m1,) = sends(initiator.start())
    initiator.receive_message(_forged_message_2(m1, payload))


def test_signature_over_another_static_key() -> None:
    payload = make_payload(ed25519(2), public_bytes(x25519(9)))
    with pytest.raises(InvalidStaticKeySignature):
        _run_against(payload)


def test_signature_by_another_identity() -> None:
    msg = noise_pb2.NoiseHandshakePayload(
        identity_key=ed25519(2).public_key().to_protobuf(),
        identity_sig=ed25519(8).sign(STATIC_KEY_DOMAIN + public_bytes(x25519(5))),
    )
    with pytest.raises(InvalidStaticKeySignature):
        _run_against(msg.SerializeToString())


@pytest.mark.parametrize(
    "identity_key",
    [
        encode_key_message(KeyType.ED25519, b"\x01" * 31),  # wrong length
        b"\x08\x05\x12\x20" + b"\x01" * 32,  # key type 5 does not exist
        b"\x08\x01",  # no Data
        b"",  # no key at all
    ],
    ids=["short-ed25519", "unknown-type", "no-data", "empty"],
)
def test_payload_with_unusable_identity_key(identity_key: bytes) -> None:
    msg = noise_pb2.NoiseHandshakePayload(identity_key=identity_key, identity_sig=b"x" * 64)
    with pytest.raises(InvalidIdentityKey):
        _run_against(msg.SerializeToString())


def test_payload_that_is_not_protobuf() -> None:
    with pytest.raises(InvalidHandshakePayload):
        _run_against(b"\xff\xff\xff")


def test_payload_with_unknown_field_3_is_accepted() -> None:
    # Earlier spec revisions carried early data in field 3; it is skipped.
    base = make_payload(ed25519(2), public_bytes(x25519(5)))
    initiator = NoiseHandshake(ed25519(1), initiator=True)
    (m1,) = sends(initiator.start())
    out = initiator.receive_message(_forged_message_2(m1, base + b"\x1a\x03abc"))
    assert len(completes(out)) == 1


def test_truncated_and_tampered_handshake_messages() -> None:
    m1, m2, m3 = HandshakePair().messages()
    for bad in (m2[:40], m2[:95]):
        pair = HandshakePair()
        sends(pair.initiator.start())
        with pytest.raises(NoiseHandshakeError):
            pair.initiator.receive_message(bad)
    for index in (40, len(m2) - 1):  # the encrypted static key, the payload tag
        tampered = bytearray(m2)
        tampered[index] ^= 0x80
        pair = HandshakePair()
        sends(pair.initiator.start())
        with pytest.raises(NoiseHandshakeError):
            pair.initiator.receive_message(bytes(tampered))
    pair = HandshakePair()
    pair.responder.start()
    sends(pair.responder.receive_message(m1))
    with pytest.raises(NoiseHandshakeError):
        pair.responder.receive_message(m3[:60])


def test_messages_out_of_order() -> None:
    m1, m2, m3 = HandshakePair().messages()
    responder = HandshakePair().responder
    with pytest.raises(LocalProtocolError):
        responder.receive_message(m1)  # before start()
    responder.start()
    with pytest.raises(NoiseHandshakeError):
        responder.receive_message(m3)  # message 3 first
    initiator = HandshakePair().initiator
    sends(initiator.start())
    with pytest.raises(NoiseHandshakeError):
        initiator.receive_message(m1)  # message 1 where 2 belongs
    pair = HandshakePair()
    pair.messages()
    with pytest.raises(LocalProtocolError):
        pair.responder.receive_message(m3)  # after completion
    with pytest.raises(LocalProtocolError):
        HandshakePair().initiator.transport()  # before completion
    with pytest.raises(LocalProtocolError):
        NoiseHandshake(ed25519(1), initiator=False, expected_peer=pair.initiator.result.remote_peer)  # type: ignore[union-attr]


def test_message_1_with_a_payload_or_a_low_order_key() -> None:
    responder = HandshakePair().responder
    responder.start()
    with pytest.raises(NoiseHandshakeError):
        responder.receive_message(public_bytes(x25519(4)) + b"early")
    responder = HandshakePair().responder
    responder.start()
    with pytest.raises(NoiseHandshakeError):
        responder.receive_message(b"\x00" * 32)  # the all-zero (low-order) point


def test_frame_limits() -> None:
    reader = FrameReader(limit=100)
    reader.feed((101).to_bytes(2, "big"))
    with pytest.raises(MessageTooLarge):
        reader.next_frame()
    with pytest.raises(LocalProtocolError):
        encode_frame(b"\x00" * (MAX_MESSAGE + 1))
    assert encode_frame(b"") == b"\x00\x00"
    reader = FrameReader()
    assert reader.want() == 2
    reader.feed(b"\x00\x05ab")
    assert reader.want() == 3 and reader.next_frame() is None
    reader.feed(b"cde\x00")
    assert reader.next_frame() == b"abcde" and reader.want() == 1


def test_secp256k1_payload_signatures_are_low_s() -> None:
    # py-libp2p (libsecp256k1) refuses a high S in the Noise payload.
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    key = Secp256k1PrivateKey.generate()
    for n in range(64):
        data = STATIC_KEY_DOMAIN + bytes([n]) * 32
        signature = key.sign(data)
        assert decode_dss_signature(signature)[1] <= order // 2
        assert key.public_key().verify(data, signature)
