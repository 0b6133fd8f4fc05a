"""Hypothesis fuzz of every Noise decoder: frames, payloads, handshake
messages and transport messages.  Arbitrary input either decodes or raises
the subsystem's typed error, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import MessageTooLarge, PeerIdMismatch, RemoteProtocolError
from overlay.secure.errors import InvalidHandshakePayload, NoiseProtocolError
from overlay.secure.framing import FrameReader, encode_frame
from overlay.secure.noise_state import public_bytes
from overlay.secure.payload import NoiseExtensions, decode_payload, make_payload
from overlay.wire.pb import noise_pb2

from .pair import HandshakePair, ed25519, sends, x25519


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


@given(st.lists(st.binary(max_size=300), max_size=6), st.lists(st.integers(0, 2000), max_size=8))
def test_frame_reader_splits_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(b) for b in bodies)
    reader = FrameReader()
    got = []
    for chunk in _cut(wire, cuts):
        reader.feed(chunk)
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert got == bodies and reader.buffered == 0


@given(st.binary(max_size=600), st.integers(0, 300))
def test_frame_reader_on_garbage(data: bytes, limit: int) -> None:
    reader = FrameReader(limit)
    reader.feed(data)
    try:
        while (frame := reader.next_frame()) is not None:
            assert len(frame) <= limit
        assert reader.want() >= 1
    except MessageTooLarge as exc:
        assert exc.size > limit


@given(st.binary(max_size=2000))
def test_payload_decoder_on_garbage(data: bytes) -> None:
    try:
        decode_payload(data)
    except InvalidHandshakePayload:
        pass


_muxer = st.text(max_size=40)


@given(
    st.lists(_muxer, max_size=40),
    st.lists(st.binary(max_size=80), max_size=5),
    st.binary(max_size=100),
)
def test_payload_decoder_on_structured_input(
    muxers: list[str], hashes: list[bytes], sig: bytes
) -> None:
    msg = noise_pb2.NoiseHandshakePayload(
        identity_key=ed25519(2).public_key().to_protobuf(), identity_sig=sig
    )
    msg.extensions.stream_muxers.extend(muxers)
    msg.extensions.webtransport_certhashes.extend(hashes)
    try:
        payload = decode_payload(msg.SerializeToString())
    except InvalidHandshakePayload:
        assert len(muxers) > 32
        return
    assert payload.extensions == NoiseExtensions(tuple(muxers), tuple(hashes))


def test_payload_round_trip() -> None:
    ext = NoiseExtensions(stream_muxers=("/yamux/1.0.0",))
    payload = decode_payload(make_payload(ed25519(2), public_bytes(x25519(5)), ext))
    assert payload.identity_key == ed25519(2).public_key() and payload.extensions == ext


@settings(max_examples=60)
@given(st.binary(max_size=400), st.sampled_from([0, 1, 2]))
def test_handshake_machine_on_garbage(data: bytes, at: int) -> None:
    """Garbage in place of message 1 (responder), 2 (initiator) or 3."""
    pair = HandshakePair()
    try:
        if at == 0:
            pair.responder.start()
            pair.responder.receive_message(data)
        elif at == 1:
            sends(pair.initiator.start())
            pair.initiator.receive_message(data)
        else:
            pair.responder.start()
            (m1,) = sends(pair.initiator.start())
            sends(pair.responder.receive_message(m1))
            pair.responder.receive_message(data)
    except (RemoteProtocolError, PeerIdMismatch):
        pass


@settings(max_examples=60)
@given(st.binary(max_size=200), st.integers(0, 400), st.integers(0, 7))
def test_handshake_machine_on_bit_flips(junk: bytes, position: int, bit: int) -> None:
    """A single flipped bit anywhere in message 2 or 3 is always caught."""
    m1, m2, m3 = HandshakePair().messages()
    for which, message in ((2, m2), (3, m3)):
        flipped = bytearray(message)
        flipped[position % len(flipped)] ^= 1 << bit
        pair = HandshakePair()
        (first,) = sends(pair.initiator.start())
        pair.responder.start()
        (second,) = sends(pair.responder.receive_message(first))
        try:
            if which == 2:
                pair.initiator.receive_message(bytes(flipped))
            else:
                pair.initiator.receive_message(second)
                pair.responder.receive_message(bytes(flipped))
        except NoiseProtocolError:
            continue
        raise AssertionError(f"a flipped bit in message {which} went unnoticed")


@given(st.lists(st.binary(max_size=100), max_size=5))
def test_transport_decrypt_on_garbage(messages: list[bytes]) -> None:
    pair = HandshakePair()
    pair.messages()
    transport = pair.responder.transport()
    for message in messages:
        try:
            transport.decrypt(message)
        except NoiseProtocolError:
            pass
        else:
            raise AssertionError("garbage authenticated")
