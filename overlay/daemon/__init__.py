"""The long-running node process (`overlay daemon`), its configuration and
data directory, and the local stream API (server and client).

The API is documented in docs/api.md; subsystems add ops with
``ApiServer.register`` (``dht_*``, ``name_*``).
"""

from overlay.daemon.api import ApiCall, ApiServer, ApiServerConfig, OpHandler
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import (
    ApiError,
    ApiProtocolError,
    BadRequest,
    DaemonAlreadyRunning,
    DaemonError,
    DaemonNotRunning,
    IdentityError,
    ListenFailed,
    MalformedMessage,
)
from overlay.daemon.home import Home, resolve_home
from overlay.daemon.protocol import MAX_MESSAGE_SIZE, ErrorCode

__all__ = [
    "ApiCall",
    "ApiClient",
    "ApiError",
    "ApiProtocolError",
    "ApiServer",
    "ApiServerConfig",
    "BadRequest",
    "DaemonAlreadyRunning",
    "DaemonError",
    "DaemonNotRunning",
    "ErrorCode",
    "Home",
    "IdentityError",
    "ListenFailed",
    "MAX_MESSAGE_SIZE",
    "MalformedMessage",
    "OpHandler",
    "resolve_home",
]
