"""Hypothesis fuzz of the yamux session decoder."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.mux.config import YamuxConfig
from overlay.mux.yamux_frames import INITIAL_WINDOW, FrameType, YamuxProtocolError, encode_header
from overlay.mux.yamux_events import (
    ConnectionTerminated,
    DataReceived,
    Event,
)
from overlay.mux.yamux_session import YamuxCore

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
