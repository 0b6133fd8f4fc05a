"""Hypothesis fuzz of the yamux session decoder."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import StreamClosed, StreamReset
from overlay.mux.config import YamuxConfig
from overlay.mux.yamux_frames import INITIAL_WINDOW, FrameType, YamuxProtocolError, encode_header
from overlay.mux.yamux_events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    StreamEnded,
    StreamOpened,
    StreamWasReset,
)
from overlay.mux.yamux_session import YamuxCore

from .pair import CorePair

frame = st.tuples(
    st.sampled_from(list(FrameType)),
    st.integers(0, 15),  # flags
    st.integers(0, 8),  # stream id
    st.one_of(st.integers(0, 64), st.integers(0, 0xFFFFFFFF)),  # length
)


def encode_frames(specs: list[tuple[FrameType, int, int, int]]) -> bytes:
    out = bytearray()
    for frame_type, flags, stream_id, length in specs:
        if frame_type is FrameType.DATA:
            length %= 1 << 10
            out += encode_header(frame_type, flags, stream_id, length) + bytes(length)
        else:
            out += encode_header(frame_type, flags, stream_id, length)
    return bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def feed(chunks: list[bytes], is_client: bool) -> tuple[YamuxCore, list[Event]]:
    core = YamuxCore(is_client, YamuxConfig(), random.Random(0))
    events: list[Event] = []
    for chunk in chunks:
        core.receive_data(chunk, 0.0)
        core.data_to_send()
        events += core.events()
    return core, events


@settings(max_examples=300)
@given(st.binary(max_size=400), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, is_client: bool) -> None:
    core, events = feed([data], is_client)
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert len(terminated) <= 1
    if terminated:
        assert core.terminated and isinstance(terminated[0].error, YamuxProtocolError)


@settings(max_examples=300)
@given(st.lists(frame, max_size=30), st.lists(st.integers(0, 1 << 16), max_size=8), st.booleans())
def test_frame_sequences_in_any_chunking(
    specs: list[tuple[FrameType, int, int, int]], cuts: list[int], is_client: bool
) -> None:
    raw = encode_frames(specs)
    whole_core, whole = feed([raw], is_client)
    _, pieces = feed(split(raw, cuts), is_client)

    def merged(events: list[Event]) -> list[object]:
        # Chunking may split one DataReceived into several.
        out: list[object] = []
        for e in events:
            last = out[-1] if out else None
            if isinstance(e, DataReceived) and isinstance(last, DataReceived) and (
                last.stream_id == e.stream_id
            ):
                out[-1] = DataReceived(e.stream_id, last.data + e.data)
            elif isinstance(e, ConnectionTerminated):  # errors compare by identity
                out.append((type(e.error), str(e.error)))
            else:
                out.append(e)
        return out

    assert merged(whole) == merged(pieces)
    # Nothing is consumed, so no stream ever received more than its window.
    per_stream: dict[int, int] = {}
    for e in whole:
        if isinstance(e, DataReceived):
            per_stream[e.stream_id] = per_stream.get(e.stream_id, 0) + len(e.data)
    assert all(n <= INITIAL_WINDOW for n in per_stream.values())
    assert whole_core.control_backlog == 0


op = st.tuples(
    st.sampled_from(["open", "send", "close", "reset", "consume", "flush"]),
    st.booleans(),  # which side acts
    st.integers(0, 7),  # which stream
    st.integers(1, 200_000),  # bytes to send or consume, flush size
)


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=40))
def test_random_operations_keep_every_stream_exact(ops: list[tuple[str, bool, int, int]]) -> None:
    """Two cores under random application commands and partial flushes:
    each stream delivers a prefix of what was sent, all of it once FIN
    arrives, and never more than the receive window unconsumed."""
    pair = CorePair()
    sides = {True: pair.client, False: pair.server}
    sent: dict[tuple[bool, int], bytearray] = {}  # keyed by (sender is client, id)
    got: dict[tuple[bool, int], bytearray] = {}
    unconsumed: dict[tuple[bool, int], int] = {}
    ended: set[tuple[bool, int]] = set()
    dead: set[int] = set()

    def absorb(receiver_is_client: bool, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, DataReceived):
                key = (not receiver_is_client, e.stream_id)
                got.setdefault(key, bytearray()).extend(e.data)
                unconsumed[key] = unconsumed.get(key, 0) + len(e.data)
                assert unconsumed[key] <= INITIAL_WINDOW
            elif isinstance(e, StreamEnded):
                ended.add((not receiver_is_client, e.stream_id))
            elif isinstance(e, StreamWasReset):
                dead.add(e.stream_id)
            elif isinstance(e, StreamOpened):
                sides[receiver_is_client].accept_stream(e.stream_id)

    for step, (kind, is_client, which, amount) in enumerate(ops):
        core = sides[is_client]
        if kind == "open":
            if core.can_open_stream():
                core.open_stream()
            continue
        if kind == "flush":
            to_server = pair.client.data_to_send(amount)
            to_client = pair.server.data_to_send(amount)
            pair.server.receive_data(to_server, 0.0)
            pair.client.receive_data(to_client, 0.0)
            absorb(False, pair.server.events())
            absorb(True, pair.client.events())
            continue
        ids = core.open_streams()
        if not ids:
            continue
        sid = sorted(ids)[which % len(ids)]
        if kind == "send":
            data = bytes([step % 256]) * (amount % 70_000)
            try:
                core.send(sid, data)
            except (StreamClosed, StreamReset):
                continue
            sent.setdefault((is_client, sid), bytearray()).extend(data)
        elif kind == "close":
            core.close_stream(sid)
        elif kind == "reset":
            core.reset_stream(sid)
            dead.add(sid)
        else:
            key = (not is_client, sid)
            n = min(amount, unconsumed.get(key, 0))
            if n:
                core.on_consumed(sid, n)
                unconsumed[key] -= n
    assert not pair.client.terminated and not pair.server.terminated
    for key, data in got.items():
        if key[1] in dead:
            continue
        assert bytes(data) == bytes(sent.get(key, b""))[: len(data)]
        if key in ended:
            assert len(data) == len(sent.get(key, b""))
