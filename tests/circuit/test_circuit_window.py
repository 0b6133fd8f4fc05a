"""The circuit transport's yamux window follows the relay's data limit."""

from __future__ import annotations

from overlay.host import Host
from overlay.host.circuit import CIRCUIT_YAMUX, LIMITED_CIRCUIT_YAMUX, CircuitTransport
from overlay.identity import Ed25519PrivateKey
from overlay.mux import YamuxConfig
from overlay.relay.circuit import CircuitLimit


def test_window_by_data_limit() -> None:
    transport = Host(Ed25519PrivateKey.generate()).circuit_transport
    assert transport.yamux_config(None) is CIRCUIT_YAMUX
    assert transport.yamux_config(CircuitLimit(120.0, None)) is CIRCUIT_YAMUX
    assert transport.yamux_config(CircuitLimit(None, 64_000_000)) is CIRCUIT_YAMUX
    # The spec's default limit: a big window buys nothing and hides the cut.
    assert transport.yamux_config(CircuitLimit(120.0, 128 * 1024)) is LIMITED_CIRCUIT_YAMUX
    assert LIMITED_CIRCUIT_YAMUX.receive_window < CIRCUIT_YAMUX.receive_window


def test_an_explicit_config_wins() -> None:
    key = Ed25519PrivateKey.generate()
    config = YamuxConfig(receive_window=512 * 1024)
    transport = CircuitTransport(Host(key), key, yamux=config)
    assert transport.yamux_config(None) is config
