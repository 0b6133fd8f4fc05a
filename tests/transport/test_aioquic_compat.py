"""Fail loudly if the aioquic internals overlay relies on change shape.

Every private name used by overlay/transport/aioquic_compat.py is checked
here, so an aioquic upgrade breaks these tests before it breaks peers.
"""

from __future__ import annotations

import datetime
import inspect
import random
import ssl

import pytest

import aioquic
from aioquic import tls
from aioquic.quic import connection as aioquic_connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicFrameType, QuicProtocolVersion
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.stream import QuicStream, QuicStreamSender

from overlay.identity import Ed25519PrivateKey
from overlay.transport.aioquic_compat import (
    AlertCertificateRequired,
    Libp2pQuicConnection,
    _ChunkSender,
)
from overlay.transport.tls import generate_credentials

NOW = datetime.datetime.now(datetime.UTC)


def test_pinned_version() -> None:
    major, minor = (int(x) for x in aioquic.__version__.split(".")[:2])
    assert (major, minor) == (1, 7), "aioquic_compat was verified against 1.7 only"


def test_tls_context_private_state() -> None:
    ctx = tls.Context(is_client=False)
    for name in ("_request_client_certificate", "_peer_certificate",
                 "_peer_certificate_chain", "_supported_groups"):
        assert name in vars(ctx), name
    assert ctx._request_client_certificate is False
    for name in ("_client_handle_certificate_verify", "_server_handle_certificate",
                 "_server_handle_certificate_verify"):
        method = getattr(tls.Context, name)
        assert list(inspect.signature(method).parameters) == ["self", "input_buf"], name
    assert tls.AlertDescription.certificate_required == 116
    assert issubclass(AlertCertificateRequired, tls.Alert)
    assert tls.Group.X25519 in ctx._supported_groups
    assert tls.Group.SECP256R1 in ctx._supported_groups


def test_connection_private_methods_and_state() -> None:
    for name, params in {
        "_initialize": ["self", "peer_cid"],
        "_write_stream_limits": ["self", "builder", "space", "stream"],
        "_write_connection_limits": ["self", "builder", "space"],
        "_on_max_stream_data_delivery": ["self", "delivery", "stream"],
        "_on_connection_limit_delivery": ["self", "delivery", "limit"],
        "_idle_timeout": ["self"],
        "_parse_transport_parameters": ["self", "data", "from_session_ticket"],
        "_write_stream_frame": ["self", "builder", "space", "stream", "max_offset"],
    }.items():
        assert list(inspect.signature(getattr(QuicConnection, name)).parameters) == params, name
    for name in ("MAX_STREAM_DATA_FRAME_CAPACITY", "CONNECTION_LIMIT_FRAME_CAPACITY", "END_STATES"):
        assert hasattr(aioquic_connection, name), name
    assert QuicConnectionState.FIRSTFLIGHT in QuicConnectionState
    conn = QuicConnection(configuration=QuicConfiguration(is_client=True))
    state = vars(conn)
    for name in ("_local_max_streams_bidi", "_local_max_streams_uni", "_local_max_data",
                 "_remote_max_streams_bidi", "_local_next_stream_id_bidi", "_streams",
                 "_handshake_confirmed", "_close_event", "_close_pending", "_state",
                 "_is_client", "_version", "_peer_cid"):
        assert name in state, name
    assert isinstance(conn._peer_cid.cid, bytes)
    assert {"_rtt_initialized", "_rtt_smoothed", "_cc", "_pacer"} <= set(vars(conn._loss))
    # set_max_datagram_size: the copies of the datagram size aioquic keeps.
    assert "_max_datagram_size" in state
    assert "_max_datagram_size" in vars(conn._loss._pacer)
    assert {"_max_datagram_size", "congestion_window"} <= set(vars(conn._loss._cc))
    # _write_stream_frame's early exit: aioquic's STREAM header is 3 bytes
    # plus the stream ID, and get_frame() refuses a negative size.
    source = inspect.getsource(QuicConnection._write_stream_frame)
    assert "3\n" in source and "size_uint_var(stream.stream_id)" in source
    assert "if max_size < 0:" in inspect.getsource(QuicStreamSender.get_frame)
    from aioquic.quic.congestion import base as congestion_base
    assert congestion_base.K_INITIAL_WINDOW == 10
    for limit in (conn._local_max_streams_bidi, conn._local_max_data):
        assert {"value", "sent", "used", "frame_type"} <= set(vars(limit))
    stream = QuicStream(stream_id=0, max_stream_data_local=10)
    assert {"max_stream_data_local", "max_stream_data_local_sent"} <= set(vars(stream))
    assert {"_buffer_start", "_buffer_stop"} <= set(vars(QuicStreamSender(0, True)))
    assert {"highest_offset", "is_finished"} <= set(vars(stream.receiver))
    builder_params = inspect.signature(QuicPacketBuilder.start_frame).parameters
    assert list(builder_params)[:5] == ["self", "frame_type", "capacity", "handler", "handler_args"]
    assert QuicFrameType.MAX_STREAM_DATA == 0x11


def _make(is_client: bool, max_streams: int = 7) -> Libp2pQuicConnection:
    creds = generate_credentials(Ed25519PrivateKey.generate(), NOW)
    config = QuicConfiguration(
        is_client=is_client, alpn_protocols=["libp2p"], verify_mode=ssl.CERT_NONE,
        certificate=creds.certificate, private_key=creds.private_key,
        max_data=1 << 16, max_stream_data=1 << 14,
    )
    return Libp2pQuicConnection(
        configuration=config, certificate_check=lambda chain: None,
        max_inbound_streams=max_streams,
        original_destination_connection_id=None if is_client else b"\x00" * 8,
    )


def test_initialize_installs_libp2p_hooks() -> None:
    client = _make(True)
    client.connect(("127.0.0.1", 9), now=0.0)
    assert "_client_handle_certificate_verify" in vars(client.tls)
    assert client.tls._supported_groups == [tls.Group.X25519, tls.Group.SECP256R1]
    server = _make(False)
    server._version = QuicProtocolVersion.VERSION_1
    server._initialize(b"\x00" * 8)
    assert server.tls._request_client_certificate is True
    assert "_server_handle_certificate" in vars(server.tls)
    assert "_server_handle_certificate_verify" in vars(server.tls)


def test_stream_limits_reach_transport_parameters() -> None:
    conn = _make(False, max_streams=7)
    assert conn._local_max_streams_bidi.value == 7
    assert conn._local_max_streams_uni.value == 0
    conn._version = QuicProtocolVersion.VERSION_1
    conn._initialize(b"\x00" * 8)
    params = conn.tls.handshake_extensions[0][1]
    from aioquic.buffer import Buffer  # type: ignore[attr-defined]
    from aioquic.quic.packet import pull_quic_transport_parameters

    parsed = pull_quic_transport_parameters(Buffer(data=params))
    assert parsed.initial_max_streams_bidi == 7
    assert parsed.initial_max_streams_uni == 0
    assert parsed.initial_max_stream_data_bidi_remote == 1 << 14
    assert parsed.initial_max_data == 1 << 16


def test_sender_private_state_the_chunked_sender_shares() -> None:
    sender = QuicStreamSender(0, True)
    assert {"_acked", "_acked_fin", "_buffer", "_buffer_fin", "_buffer_start", "_buffer_stop",
            "_pending", "_pending_eof", "_reset_error_code", "buffer_is_empty",
            "highest_offset", "is_finished"} <= set(vars(sender))
    # _ChunkSender copies these three methods; their signatures must still match.
    for name, params in {
        "write": ["self", "data", "end_stream"],
        "get_frame": ["self", "max_size", "max_offset"],
        "on_data_delivery": ["self", "delivery", "start", "stop", "fin"],
    }.items():
        assert list(inspect.signature(getattr(QuicStreamSender, name)).parameters) == params
    assert list(inspect.signature(QuicConnection.send_stream_data).parameters) == [
        "self", "stream_id", "data", "end_stream"]
    assert "_get_or_create_stream_for_send" in vars(QuicConnection)


@pytest.mark.parametrize("seed", range(12))
def test_chunked_sender_matches_aioquic_sender(seed: int) -> None:
    """The same writes, frame requests, acknowledgements and losses give the
    same frames and the same state as aioquic's own sender."""
    rng = random.Random(seed)
    ours, theirs = _ChunkSender(4), QuicStreamSender(4, True)
    outstanding: list[tuple[int, int, bool]] = []
    written = 0
    for step in range(400):
        action = rng.random()
        if action < 0.3 and ours._buffer_fin is None:
            size = rng.choice([1, 7, 100, 1500, 16383, 16384, 70000, 262144])
            data = rng.randbytes(size)
            fin = rng.random() < 0.02
            ours.write(data, end_stream=fin)
            theirs.write(data, end_stream=fin)
            written += size
        elif action < 0.7:
            max_size = rng.choice([-1, 0, 1, 5, 1200, 16000, 60000])
            max_offset = rng.choice([None, written, written // 2, written + 10])
            a, b = ours.get_frame(max_size, max_offset), theirs.get_frame(max_size, max_offset)
            assert (a is None) == (b is None), step
            if a is not None and b is not None:
                assert (a.data, a.offset, a.fin) == (b.data, b.offset, b.fin), step
                outstanding.append((a.offset, a.offset + len(a.data), a.fin))
        elif outstanding:
            start, stop, fin = outstanding.pop(rng.randrange(len(outstanding)))
            delivery = QuicDeliveryState.ACKED if rng.random() < 0.8 else QuicDeliveryState.LOST
            ours.on_data_delivery(delivery, start, stop, fin)
            theirs.on_data_delivery(delivery, start, stop, fin)
        for name in ("_buffer_start", "_buffer_stop", "_buffer_fin", "buffer_is_empty",
                     "highest_offset", "is_finished", "_pending_eof"):
            assert getattr(ours, name) == getattr(theirs, name), (step, name)
        assert list(ours._pending) == list(theirs._pending), step
        # Acknowledged chunks are let go: what is held covers what is not acked.
        held = sum(len(c) for c in ours._chunks[ours._head:])
        assert held <= ours._buffer_stop - ours._buffer_start + 262144 + 16384


def test_connection_streams_use_the_chunked_sender() -> None:
    conn = _make(True)
    conn.send_stream_data(0, b"x" * 20000)
    assert type(conn._streams[0].sender) is _ChunkSender
    conn.send_stream_data(0, b"y", end_stream=True)
    assert conn.send_buffered(0) == 20001
