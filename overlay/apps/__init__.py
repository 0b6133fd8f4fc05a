"""Ordinary applications on the overlay: exposed TCP services
(``/ovl/tcp/1.0.0``), named port forwards, and a SOCKS5 + HTTP proxy that
sends ``*.ovl`` hosts to named peers' services (docs/apps.md).

Pure parts: ``socks5``, ``http_proxy``, ``service_proto``, ``policy``,
``config``.  Drivers: ``pump``, ``tcp``, ``exposer``, ``connector``,
``forward``, ``proxy``, and ``daemon_ext`` (the daemon extension and its
``expose_*`` / ``forward_*`` ops).
"""

from overlay.apps.config import Exposure, parse_services
from overlay.apps.errors import (
    AppsError,
    HeadTooLarge,
    HttpRequestError,
    ProxyProtocolError,
    Reason,
    ServiceHeaderError,
    SocksError,
    TargetError,
)
from overlay.apps.service_proto import SERVICE_PROTOCOL

__all__ = [
    "SERVICE_PROTOCOL",
    "AppsError",
    "Exposure",
    "HeadTooLarge",
    "HttpRequestError",
    "ProxyProtocolError",
    "Reason",
    "ServiceHeaderError",
    "SocksError",
    "TargetError",
    "parse_services",
]
