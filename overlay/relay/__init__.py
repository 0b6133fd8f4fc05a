"""Circuit relay v2 (libp2p/specs relay/circuit-v2.md): the hop server, the
reservation client and stop handler, auto-relay, and the daemon extension
(``overlay.relay.daemon_ext``, imported on its own: it needs the daemon).

``Circuit`` is what the circuit transport (``overlay.host.circuit``)
upgrades with Noise and yamux; ``open_circuit`` is how it dials.
"""

from overlay.relay.autorelay import AutoRelay, AutoRelayConfig, RelayPlan
from overlay.relay.circuit import Circuit, CircuitLimit
from overlay.relay.client import RelayClient, ReservationInfo, open_circuit, reserve
from overlay.relay.errors import (
    ConnectionFailed,
    InvalidVoucher,
    NoReservation,
    PermissionDenied,
    RelayDecodeError,
    RelayError,
    RelayRefused,
    ReservationRefused,
    ResourceLimitExceeded,
)
from overlay.relay.messages import HOP_PROTOCOL, STOP_PROTOCOL
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayCore, RelayLimits, RelayServerStats
from overlay.relay.voucher import Voucher, open_voucher, seal_voucher

__all__ = [
    "HOP_PROTOCOL",
    "STOP_PROTOCOL",
    "AutoRelay",
    "AutoRelayConfig",
    "RelayPlan",
    "Circuit",
    "CircuitLimit",
    "RelayClient",
    "ReservationInfo",
    "open_circuit",
    "reserve",
    "RelayError",
    "RelayDecodeError",
    "RelayRefused",
    "ReservationRefused",
    "ResourceLimitExceeded",
    "PermissionDenied",
    "ConnectionFailed",
    "NoReservation",
    "InvalidVoucher",
    "RelayServer",
    "RelayCore",
    "RelayLimits",
    "RelayServerStats",
    "Voucher",
    "seal_voucher",
    "open_voucher",
]
