"""Fail loudly if the aioquic internals overlay relies on change shape.

Every private name used by overlay/transport/aioquic_compat.py is checked
here, so an aioquic upgrade breaks these tests before it breaks peers.
"""

from __future__ import annotations

import datetime
import inspect
import ssl

import aioquic
from aioquic import tls
from aioquic.quic import connection as aioquic_connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicFrameType, QuicProtocolVersion
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.stream import QuicStream, QuicStreamSender

from overlay.identity import Ed25519PrivateKey
from overlay.transport.aioquic_compat import AlertCertificateRequired, Libp2pQuicConnection
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
