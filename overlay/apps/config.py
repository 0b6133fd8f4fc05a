"""The ``services`` config table (persisted exposures) and the ``proxy``
key, validated without I/O.

```toml
proxy = "127.0.0.1:1080"
[services]
http = {port = 8080}
ssh = {port = 22, host = "127.0.0.1", allow = ["bob.ovl", "12D3KooW…"]}
```
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from overlay.apps.service_proto import check_service_name
from overlay.errors import ConfigError, OverlayError

__all__ = ["Exposure", "MAX_ALLOW", "MAX_SERVICES", "exposure_table", "parse_exposure",
           "parse_services", "check_allow_entry"]

MAX_SERVICES = 64
MAX_ALLOW = 64


@dataclass(frozen=True, slots=True)
class Exposure:
    service: str
    port: int
    """The local TCP port streams are connected to (and the port published)."""
    host: str = "127.0.0.1"
    allow: tuple[str, ...] = ()
    """Peer IDs or names; empty: anyone may connect."""


def check_allow_entry(entry: str) -> str:
    """A peer ID or a name (normalized); ``ValueError`` otherwise."""
    from overlay.identity import PeerId
    from overlay.naming.names import normalize_hostname

    if not isinstance(entry, str) or not entry:
        raise ValueError("an allowlist entry is a peer ID or a name")
    try:
        return str(PeerId.from_string(entry))
    except (OverlayError, ValueError):
        pass
    try:
        name = normalize_hostname(entry)
    except OverlayError as exc:
        raise ValueError(f"allowlist entry {entry!r} is neither a peer ID nor a name: {exc}") \
            from None
    if "." not in name:
        raise ValueError(f"allowlist entry {entry!r} is neither a peer ID nor a name (NAME.ovl)")
    return name


def parse_exposure(service: str, port: Any, host: Any = "127.0.0.1",
                   allow: Any = ()) -> Exposure:
    """Raises ``ValueError`` naming the bad field."""
    check_service_name(service)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"service {service!r}: `port` must be 1 to 65535")
    if not isinstance(host, str):
        raise ValueError(f"service {service!r}: `host` must be an IP address")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"service {service!r}: `host` {host!r} is not an IP address") from None
    if isinstance(allow, str) or not isinstance(allow, (list, tuple)) or len(allow) > MAX_ALLOW:
        raise ValueError(f"service {service!r}: `allow` must be a list of at most "
                         f"{MAX_ALLOW} peer IDs or names")
    return Exposure(service, port, host, tuple(check_allow_entry(e) for e in allow))


def parse_services(table: Mapping[str, Any]) -> dict[str, Exposure]:
    """The ``[services]`` table; raises ``ConfigError`` naming the entry."""
    if len(table) > MAX_SERVICES:
        raise ConfigError(f"`services` has {len(table)} entries; at most {MAX_SERVICES}")
    out: dict[str, Exposure] = {}
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"`services.{name}` must be a table such as {{port = 8080}}")
        unknown = set(entry) - {"port", "host", "allow"}
        if unknown:
            raise ConfigError(f"`services.{name}`: unknown key `{sorted(unknown)[0]}` "
                              "(known: port, host, allow)")
        try:
            out[name] = parse_exposure(name, entry.get("port"), entry.get("host", "127.0.0.1"),
                                       entry.get("allow", []))
        except ValueError as exc:
            raise ConfigError(f"`services`: {exc}") from None
    return out


def exposure_table(exposures: Mapping[str, Exposure]) -> dict[str, Any]:
    """The ``[services]`` table for ``exposures`` (what ``parse_services`` reads)."""
    table: dict[str, Any] = {}
    for name, e in sorted(exposures.items()):
        entry: dict[str, Any] = {"port": e.port}
        if e.host != "127.0.0.1":
            entry["host"] = e.host
        if e.allow:
            entry["allow"] = list(e.allow)
        table[name] = entry
    return table
