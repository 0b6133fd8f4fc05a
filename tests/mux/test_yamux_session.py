"""The pure yamux session, driven in pairs at a fixed ``now``."""

from __future__ import annotations

import random

import pytest

from overlay.errors import LimitExceeded, LocalProtocolError, StreamClosed, StreamReset
from overlay.mux.config import YamuxConfig
from overlay.mux.yamux_frames import (
    HEADER_SIZE,
    INITIAL_WINDOW,
    Flag,
    FrameType,
    GoAwayCode,
    UnknownVersion,
    decode_header,
    encode_header,
)
from overlay.mux.yamux_events import (
    AckBacklogFull,
    ConnectionTerminated,
    DataReceived,
    GoAwayReceived,
    GoingAway,
    KeepaliveTimeout,
    PingRtt,
    PingTimedOut,
    SessionClosed,
    StreamAcked,
    StreamEnded,
    StreamIdError,
    StreamOpened,
    StreamWasReset,
    StreamWritable,
    TooManyStreams,
    WindowExceeded,
)
from overlay.mux.yamux_session import StreamState, YamuxCore

from .pair import CorePair, data_of

KiB = 1024


def frames(raw: bytes) -> list[tuple[FrameType, Flag, int, int]]:
    """Headers in ``raw`` (payloads skipped)."""
    out = []
    pos = 0
    while pos < len(raw):
        h = decode_header(raw[pos : pos + HEADER_SIZE])
        out.append((h.type, h.flags, h.stream_id, h.length))
        pos += HEADER_SIZE + h.payload_length
    return out


def established(pair: CorePair) -> int:
    sid = pair.client.open_stream()
    pair.roundtrip()
    pair.server.accept_stream(sid)
    pair.roundtrip()
    return sid


def test_open_sends_syn_on_a_window_update_and_accept_acks() -> None:
    pair = CorePair()
    sid = pair.client.open_stream()
    assert sid == 1 and pair.client.open_stream() == 3  # the client uses odd IDs
    assert pair.client.stream_state(1) is StreamState.SYN_SENT
    syn = pair.client.data_to_send()
    assert frames(syn) == [
        (FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0),
        (FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0),
    ]
    pair.server.receive_data(syn, 0.0)
    assert pair.server.events() == [StreamOpened(1), StreamOpened(3)]
    assert pair.server.stream_state(1) is StreamState.SYN_RECEIVED
    assert pair.server.data_to_send() == b""  # no implicit ACK
    pair.server.accept_stream(1)
    ack = pair.server.data_to_send()
    assert frames(ack) == [(FrameType.WINDOW_UPDATE, Flag.ACK, 1, 0)]
    pair.client.receive_data(ack, 0.0)
    assert pair.client.events() == [StreamAcked(1)]
    assert pair.client.stream_state(1) is StreamState.ESTABLISHED
    assert pair.server.stream_state(1) is StreamState.ESTABLISHED
    assert pair.server.open_stream() == 2  # the server uses even IDs


def test_data_both_ways_and_no_flags_on_payload_frames() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.client.send(sid, b"hello")
    raw = pair.client.data_to_send()
    assert frames(raw) == [(FrameType.DATA, Flag.NONE, sid, 5)]
    pair.server.receive_data(raw, 0.0)
    assert pair.server.events() == [DataReceived(sid, b"hello")]
    pair.server.send(sid, b"world")
    client_events, _ = pair.roundtrip()
    assert data_of(client_events, sid) == b"world"


def test_data_may_be_sent_before_the_ack() -> None:
    pair = CorePair()
    sid = pair.client.open_stream()
    pair.client.send(sid, b"early")
    _, server_events = pair.roundtrip()
    assert server_events == [StreamOpened(sid), DataReceived(sid, b"early")]


def test_frames_are_split_at_max_frame_size() -> None:
    pair = CorePair(client_config=YamuxConfig(max_frame_size=1024))
    sid = established(pair)
    pair.client.send(sid, bytes(2500))
    lengths = [f[3] for f in frames(pair.client.data_to_send())]
    assert lengths == [1024, 1024, 452]


def test_data_to_send_fills_its_limit_exactly_by_cutting_the_last_frame() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.client.send(sid, bytes(range(256)) * 800)  # 204800 bytes
    out = pair.client.data_to_send(65519)
    assert len(out) == 65519  # one whole Noise message
    assert [f[3] for f in frames(out)] == [16 * KiB] * 3 + [65519 - 3 * 16 * KiB - 4 * HEADER_SIZE]
    rest = pair.client.data_to_send(1 << 30)
    assert sum(f[3] for f in frames(rest)) == 204800 - (65519 - 4 * HEADER_SIZE)
    pair.server.receive_data(out + rest, 0.0)
    assert data_of(pair.server.events(), sid) == bytes(range(256)) * 800


def test_a_lone_stream_fills_the_batch_and_several_take_turns() -> None:
    pair = CorePair()
    a, b = established(pair), established(pair)
    pair.client.send(a, bytes(40 * KiB))
    out = pair.client.data_to_send(1 << 20)
    assert [(f[2], f[3]) for f in frames(out)] == [(a, 16 * KiB), (a, 16 * KiB), (a, 8 * KiB)]
    pair.client.send(a, bytes(40 * KiB))
    pair.client.send(b, bytes(40 * KiB))
    out = pair.client.data_to_send(1 << 20)
    assert [f[2] for f in frames(out)] == [a, b, a, b, a, b]


def test_frames_in_a_row_for_a_stream_arrive_as_one_event_in_order() -> None:
    pair = CorePair()
    a, b = established(pair), established(pair)
    wire = b"".join(
        encode_header(FrameType.DATA, flags, sid, len(body)) + body
        for sid, flags, body in [
            (a, Flag.NONE, b"a1"), (a, Flag.NONE, b"a2"), (b, Flag.NONE, b"b1"),
            (b, Flag.FIN, b"b2"), (a, Flag.NONE, b"a3"),
        ]
    ) + encode_header(FrameType.WINDOW_UPDATE, Flag.NONE, a, 5) + encode_header(
        FrameType.DATA, Flag.NONE, a, 2) + b"a4"
    pair.server.receive_data(wire, 0.0)
    assert pair.server.events() == [
        DataReceived(a, b"a1a2"), DataReceived(b, b"b1"), DataReceived(b, b"b2"),
        StreamEnded(b), DataReceived(a, b"a3"), DataReceived(a, b"a4"),
    ]


def test_fin_half_closes_each_way() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.client.send(sid, b"request")
    pair.client.close_stream(sid)
    assert pair.client.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    raw = pair.client.data_to_send()
    assert frames(raw)[-1] == (FrameType.DATA, Flag.FIN, sid, 0)
    pair.server.receive_data(raw, 0.0)
    assert pair.server.events() == [DataReceived(sid, b"request"), StreamEnded(sid)]
    assert pair.server.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    with pytest.raises(StreamClosed):
        pair.client.send(sid, b"more")
    pair.server.send(sid, b"response")  # the other direction stays open
    pair.server.close_stream(sid)
    client_events, _ = pair.roundtrip()
    assert client_events == [DataReceived(sid, b"response"), StreamEnded(sid)]
    assert pair.client.stream_state(sid) is StreamState.CLOSED
    assert pair.server.stream_state(sid) is StreamState.CLOSED
    assert pair.client.open_streams() == pair.server.open_streams() == []


def test_server_half_closes_first() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.server.close_stream(sid)
    client_events, _ = pair.roundtrip()
    assert client_events == [StreamEnded(sid)]
    pair.client.send(sid, b"still")
    _, server_events = pair.roundtrip()
    assert data_of(server_events, sid) == b"still"


def test_reset() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.client.send(sid, b"x" * 100)
    pair.client.reset_stream(sid)
    raw = pair.client.data_to_send()
    assert frames(raw) == [(FrameType.DATA, Flag.RST, sid, 0)]  # queued data is dropped
    pair.server.receive_data(raw, 0.0)
    assert pair.server.events() == [StreamWasReset(sid)]
    with pytest.raises(StreamReset):
        pair.server.send(sid, b"x")
    with pytest.raises(StreamReset):
        pair.client.send(sid, b"x")
    # Data the server had in flight before it saw the RST is ignored.
    pair.client.receive_data(encode_header(FrameType.DATA, Flag.NONE, sid, 3) + b"abc", 0.0)
    assert pair.client.events() == [] and not pair.client.terminated


def test_window_exhaustion_then_update_after_consumption() -> None:
    pair = CorePair()
    sid = established(pair)
    payload = random.Random(7).randbytes(300 * KiB)
    pair.client.send(sid, payload)
    _, server_events = pair.roundtrip()
    got = data_of(server_events, sid)
    assert got == payload[:INITIAL_WINDOW]  # exactly the window, no more
    assert pair.client.send_window(sid) == 0
    assert pair.client.send_buffered(sid) == 300 * KiB - INITIAL_WINDOW
    assert pair.server.receive_window(sid) == 0
    # Consumption below half the window returns nothing yet ...
    pair.server.on_consumed(sid, 100 * KiB)
    assert pair.server.data_to_send() == b""
    # ... reaching half of it sends one window update with all the credit.
    pair.server.on_consumed(sid, 28 * KiB)
    raw = pair.server.data_to_send()
    assert frames(raw) == [(FrameType.WINDOW_UPDATE, Flag.NONE, sid, 128 * KiB)]
    pair.client.receive_data(raw, 0.0)
    _, server_events = pair.roundtrip()
    assert data_of(server_events, sid) == payload[INITIAL_WINDOW:]
    assert StreamWritable(sid) in pair.client_events
    assert pair.client.send_buffered(sid) == 0


def test_larger_receive_window_is_granted_in_syn_and_ack() -> None:
    big = YamuxConfig(receive_window=1024 * KiB)
    pair = CorePair(client_config=big, server_config=big)
    sid = pair.client.open_stream()
    assert frames(pair.client.data_to_send()) == [
        (FrameType.WINDOW_UPDATE, Flag.SYN, sid, 768 * KiB)
    ]
    pair2 = CorePair(client_config=big, server_config=big)
    sid = established(pair2)
    assert pair2.client.send_window(sid) == pair2.server.send_window(sid) == 1024 * KiB
    pair2.client.send(sid, bytes(1024 * KiB))
    _, server_events = pair2.roundtrip()
    assert len(data_of(server_events, sid)) == 1024 * KiB


def test_sender_exceeding_the_window_is_a_protocol_error() -> None:
    server = YamuxCore(False, YamuxConfig(), random.Random(0))
    server.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0), 0.0)
    server.receive_data(encode_header(FrameType.DATA, Flag.NONE, 1, INITIAL_WINDOW + 1), 0.0)
    events = server.events()
    assert events[0] == StreamOpened(1)
    assert isinstance(events[-1], ConnectionTerminated)
    assert isinstance(events[-1].error, WindowExceeded)
    assert isinstance(server.error, WindowExceeded)
    assert frames(server.data_to_send()) == [
        (FrameType.GO_AWAY, Flag.NONE, 0, GoAwayCode.PROTOCOL_ERROR)
    ]
    with pytest.raises(SessionClosed):
        server.open_stream()
    server.receive_data(b"anything", 0.0)  # ignored once terminated
    assert server.events() == []


def test_window_counts_across_frames() -> None:
    server = YamuxCore(False, YamuxConfig(), random.Random(0))
    half = INITIAL_WINDOW // 2
    raw = encode_header(FrameType.DATA, Flag.SYN, 1, half) + bytes(half)
    raw += encode_header(FrameType.DATA, Flag.NONE, 1, half) + bytes(half)
    server.receive_data(raw, 0.0)
    assert not server.terminated
    server.receive_data(encode_header(FrameType.DATA, Flag.NONE, 1, 1), 0.0)
    assert isinstance(server.error, WindowExceeded)


def test_too_many_inbound_streams_are_reset() -> None:
    pair = CorePair(server_config=YamuxConfig(max_inbound_streams=2))
    ids = [pair.client.open_stream() for _ in range(3)]
    for sid in ids:
        pair.client.send(sid, b"hi")
    client_events, server_events = pair.roundtrip()
    assert [e for e in server_events if isinstance(e, StreamOpened)] == [
        StreamOpened(1),
        StreamOpened(3),
    ]
    assert client_events == [StreamWasReset(5)]
    assert data_of(server_events, 5) == b""  # its data was skipped, not buffered
    assert not pair.server.terminated
    # Once one closes, the next stream is accepted.
    pair.client.reset_stream(1)
    pair.roundtrip()
    pair.client.open_stream()
    _, server_events = pair.roundtrip()
    assert StreamOpened(7) in server_events


def test_accept_backlog_resets_streams_beyond_it() -> None:
    pair = CorePair(server_config=YamuxConfig(accept_backlog=2))
    for _ in range(3):
        pair.client.open_stream()
    client_events, _ = pair.roundtrip()
    assert client_events == [StreamWasReset(5)]
    pair.server.accept_stream(1)
    pair.client.open_stream()
    client_events, server_events = pair.roundtrip()
    assert StreamOpened(7) in server_events and StreamAcked(1) in client_events


def test_ack_backlog_limits_our_unacknowledged_streams() -> None:
    pair = CorePair(client_config=YamuxConfig(max_ack_backlog=2))
    pair.client.open_stream()
    pair.client.open_stream()
    assert not pair.client.can_open_stream()
    with pytest.raises(AckBacklogFull):
        pair.client.open_stream()
    pair.roundtrip()
    pair.server.accept_stream(1)
    pair.roundtrip()
    assert pair.client.can_open_stream()
    assert pair.client.open_stream() == 5


def test_max_outbound_streams() -> None:
    pair = CorePair(client_config=YamuxConfig(max_outbound_streams=1))
    pair.client.open_stream()
    with pytest.raises(TooManyStreams) as info:
        pair.client.open_stream()
    assert isinstance(info.value, LimitExceeded)


def test_ping_rtt() -> None:
    pair = CorePair()
    value = pair.client.ping(now=10.0)
    raw = pair.client.data_to_send()
    assert frames(raw) == [(FrameType.PING, Flag.SYN, 0, value)]
    pair.server.receive_data(raw, 10.1)
    answer = pair.server.data_to_send()
    assert frames(answer) == [(FrameType.PING, Flag.ACK, 0, value)]  # echoes the value
    pair.client.receive_data(answer, 10.25)
    events = pair.client.events()
    assert len(events) == 1 and isinstance(events[0], PingRtt)
    assert events[0].value == value and events[0].rtt == pytest.approx(0.25)
    pair.client.receive_data(answer, 11.0)  # an unexpected answer is ignored
    assert pair.client.events() == []


def test_pending_pings_are_limited() -> None:
    core = YamuxCore(True, YamuxConfig(max_pending_pings=2), random.Random(0))
    core.ping(0.0)
    core.ping(0.0)
    with pytest.raises(LimitExceeded):
        core.ping(0.0)


def test_go_away_local_and_remote() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.client.go_away()
    assert frames(pair.client.data_to_send()) == [(FrameType.GO_AWAY, Flag.NONE, 0, 0)]
    pair.client.go_away()  # idempotent
    pair.server.receive_data(encode_header(FrameType.GO_AWAY, Flag.NONE, 0, 0), 0.0)
    assert pair.server.events() == [GoAwayReceived(GoAwayCode.NORMAL)]
    assert pair.server.remote_go_away == 0
    with pytest.raises(GoingAway):
        pair.client.open_stream()
    with pytest.raises(GoingAway):
        pair.server.open_stream()
    # Existing streams go on.
    pair.server.send(sid, b"after go-away")
    client_events, _ = pair.roundtrip()
    assert data_of(client_events, sid) == b"after go-away"


def test_syn_after_local_go_away_is_refused() -> None:
    server = YamuxCore(False, YamuxConfig(), random.Random(0))
    server.go_away()
    server.data_to_send()
    server.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0), 0.0)
    assert server.events() == []
    assert frames(server.data_to_send()) == [(FrameType.DATA, Flag.RST, 1, 0)]


@pytest.mark.parametrize(
    "raw",
    [
        encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0),  # the server's parity
        encode_header(FrameType.DATA, Flag.NONE, 0, 0),  # stream frame on stream 0
        encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0)
        + encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0),  # duplicate SYN
        encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 5, 0)
        + encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 3, 0),  # IDs go backwards
    ],
    ids=["parity", "stream-zero", "duplicate", "backwards"],
)
def test_stream_id_violations(raw: bytes) -> None:
    server = YamuxCore(False, YamuxConfig(), random.Random(0))
    server.receive_data(raw, 0.0)
    assert isinstance(server.error, StreamIdError)
    assert frames(server.data_to_send())[-1] == (FrameType.GO_AWAY, Flag.NONE, 0, 1)


def test_malformed_header_ends_the_session() -> None:
    server = YamuxCore(False, YamuxConfig(), random.Random(0))
    server.receive_data(b"\x01" + bytes(11), 0.0)
    assert isinstance(server.error, UnknownVersion)
    assert server.events() == [ConnectionTerminated(server.error)]


def test_data_after_fin_is_a_protocol_error() -> None:
    server = YamuxCore(False, YamuxConfig(), random.Random(0))
    server.receive_data(encode_header(FrameType.DATA, Flag.SYN | Flag.FIN, 1, 0), 0.0)
    server.receive_data(encode_header(FrameType.DATA, Flag.NONE, 1, 1) + b"x", 0.0)
    assert server.terminated and server.error is not None


def test_window_overflow_is_a_protocol_error() -> None:
    server = YamuxCore(False, YamuxConfig(), random.Random(0))
    server.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0xFFFFFFFF), 0.0)
    assert server.terminated


def test_byte_at_a_time_gives_the_same_events() -> None:
    pair = CorePair()
    sid = pair.client.open_stream()
    pair.client.send(sid, b"split me")
    pair.client.close_stream(sid)
    raw = pair.client.data_to_send()
    for i in range(len(raw)):
        pair.server.receive_data(raw[i : i + 1], 0.0)
    events = pair.server.events()
    assert data_of(events, sid) == b"split me"
    assert events[0] == StreamOpened(sid) and events[-1] == StreamEnded(sid)


def test_fin_waits_for_window_blocked_data() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.client.send(sid, bytes(INITIAL_WINDOW + 10))
    pair.client.close_stream(sid)
    _, server_events = pair.roundtrip()
    assert StreamEnded(sid) not in server_events
    pair.server.on_consumed(sid, INITIAL_WINDOW)
    _, server_events = pair.roundtrip()
    assert server_events[-1] == StreamEnded(sid)
    assert len(data_of(server_events, sid)) == 10


def test_consuming_more_than_received_is_local_misuse() -> None:
    pair = CorePair()
    sid = established(pair)
    pair.client.send(sid, b"abc")
    pair.roundtrip()
    with pytest.raises(LocalProtocolError):
        pair.server.on_consumed(sid, 4)


def test_eof_terminates_without_error() -> None:
    core = YamuxCore(True, YamuxConfig(), random.Random(0))
    core.open_stream()
    core.receive_eof()
    assert core.events() == [ConnectionTerminated(None)]
    assert core.open_streams() == [] and core.error is None


def keepalive_core() -> YamuxCore:
    config = YamuxConfig(keepalive_interval=30.0, ping_timeout=10.0)
    return YamuxCore(True, config, random.Random(0), now=0.0)


def test_keepalive_ping_after_silence_and_its_answer() -> None:
    core = keepalive_core()
    assert core.next_deadline() == 30.0
    core.on_timer(29.9)
    assert core.data_to_send() == b""
    core.on_timer(30.0)
    sent = frames(core.data_to_send())
    assert len(sent) == 1 and sent[0][:3] == (FrameType.PING, Flag.SYN, 0)
    assert core.next_deadline() == 40.0  # now it waits for the answer
    core.receive_data(encode_header(FrameType.PING, Flag.ACK, 0, sent[0][3]), 31.0)
    assert core.events() == []  # keep-alives are not reported as PingRtt
    assert core.last_rtt == 1.0
    assert core.next_deadline() == 61.0


def test_anything_received_postpones_the_keepalive() -> None:
    core = keepalive_core()
    core.receive_data(encode_header(FrameType.PING, Flag.SYN, 0, 5), 20.0)
    assert core.next_deadline() == 50.0
    core.on_timer(30.0)
    assert frames(core.data_to_send()) == [(FrameType.PING, Flag.ACK, 0, 5)]


def test_unanswered_keepalive_ends_the_session() -> None:
    core = keepalive_core()
    core.on_timer(30.0)
    core.on_timer(39.9)
    assert not core.terminated
    core.on_timer(40.0)
    assert core.terminated and isinstance(core.error, KeepaliveTimeout)
    assert core.events() == [ConnectionTerminated(core.error)]
    assert core.next_deadline() is None


def test_our_unanswered_ping_times_out_alone() -> None:
    config = YamuxConfig(keepalive_interval=None, ping_timeout=10.0)
    core = YamuxCore(True, config, random.Random(0))
    assert core.next_deadline() is None
    value = core.ping(5.0)
    assert core.next_deadline() == 15.0
    core.on_timer(15.0)
    assert core.events() == [PingTimedOut(value)]
    assert not core.terminated and core.next_deadline() is None


def test_no_keepalive_deadline_while_pings_are_full() -> None:
    config = YamuxConfig(keepalive_interval=1.0, ping_timeout=10.0, max_pending_pings=1)
    core = YamuxCore(True, config, random.Random(0))
    core.ping(0.0)
    assert core.next_deadline() == 10.0  # not 1.0, which on_timer could not serve
