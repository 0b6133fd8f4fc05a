"""The daemon's configuration: ``<home>/config.toml`` ↔ ``DaemonConfig``.

The file carries ``version = 1``; later subsystems add keys (or tables) here
and to ``DaemonConfig``.  Unknown keys are an error naming the key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from overlay.daemon.tomlwriter import TomlValue, dumps
from overlay.errors import ConfigError, InvalidMultiaddr, OverlayError
from overlay.fsutil import atomic_write
from overlay.multiaddrs import parse_quic_multiaddr
from overlay.naming.dns_front import parse_dns_address
from overlay.naming.names import normalize_hostname

__all__ = [
    "CONFIG_VERSION",
    "DEFAULT_LISTEN",
    "DaemonConfig",
    "config_document",
    "config_keys",
    "with_value",
    "load_config",
    "parse_config",
    "render_config",
    "save_config",
]

CONFIG_VERSION = 1
DEFAULT_LISTEN: tuple[str, ...] = (
    "/ip4/0.0.0.0/udp/4001/quic-v1",
    "/ip6/::/udp/4001/quic-v1",
)
_MAX_ADDRS = 64


def _check_stun(servers: tuple[str, ...]) -> None:
    from overlay.nat.config import MAX_STUN_SERVERS, parse_stun_server

    if len(servers) > MAX_STUN_SERVERS:
        raise ConfigError(f"`stun` has {len(servers)} entries; at most {MAX_STUN_SERVERS}")
    for server in servers:
        try:
            parse_stun_server(server)
        except OverlayError as exc:
            raise ConfigError(f"`stun`: {exc}") from None


def _check_addrs(name: str, addrs: tuple[str, ...], need_peer: bool) -> None:
    if len(addrs) > _MAX_ADDRS:
        raise ConfigError(f"`{name}` has {len(addrs)} entries; at most {_MAX_ADDRS} are allowed")
    for addr in addrs:
        if not isinstance(addr, str):
            raise ConfigError(f"`{name}` entries must be strings, got {addr!r}")
        try:
            parsed = parse_quic_multiaddr(addr)
        except InvalidMultiaddr as exc:
            raise ConfigError(f"`{name}`: {exc}") from exc
        if need_peer and parsed.peer_id is None:
            raise ConfigError(f"`{name}`: {addr} needs a /p2p/<peer-id> suffix")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    """QUIC-v1 multiaddrs to listen on; port 0 picks a free port."""
    api_socket: str = ""
    """The API socket path; empty means ``<home>/api.sock``, relative paths
    are relative to the data directory."""
    bootstrap: tuple[str, ...] = field(default=())
    """Full multiaddrs (with /p2p) of DHT bootstrap peers."""
    dht_mode: str = "server"
    """``server`` answers DHT queries and is listed in routing tables;
    ``client`` only asks."""
    kad_protocol: str = "/ovl/kad/1.0.0"
    """The Kademlia protocol ID (``/ipfs/kad/1.0.0`` joins the IPFS DHT)."""
    dns: str = "127.0.0.1:5335"
    """Where the DNS front answers for names (UDP and TCP), ``HOST:PORT``;
    ``off`` disables it."""
    zone: str = "ovl"
    """The name zone (suffix); every node of a network must use the same."""
    stun: tuple[str, ...] = field(default=())
    """STUN servers (``HOST:PORT``) asked from the QUIC sockets for the
    node's public mapping; an introducer's QUIC port is one (docs/nat.md)."""
    introducer: bool = False
    """Serve the network from a public address: answer STUN binding
    requests on the QUIC ports (circuit relay v2 will join this flag)."""
    mdns: bool = True
    """Find peers on the LAN with libp2p mDNS (docs/mdns.md); it runs only
    on the non-loopback addresses the node listens on."""
    relays: tuple[str, ...] = field(default=())
    """Relays (multiaddrs with /p2p) to keep a circuit relay reservation on,
    whatever AutoNAT says (docs/nat.md, "Circuit relay")."""
    relay_limits: Mapping[str, Any] = field(default_factory=dict)
    """An introducer's circuit relay limits (table; docs/nat.md lists keys)."""
    metrics: str = "off"
    """Serve Prometheus metrics (limit hits, kad, DNS and API counters) over
    HTTP at ``HOST:PORT``; ``off`` (the default) serves none.  Bind a
    loopback address unless the scraper is trusted: nothing is secret but
    nothing is authenticated either."""
    holepunch: bool = True
    upnp: bool = True
    """Map the QUIC port on the home router with UPnP IGD (docs/nat.md,
    "UPnP"); only tried with a non-loopback listen address and a default
    gateway on a private LAN.  ``false`` never sends SSDP."""
    """Upgrade relayed connections to direct ones with DCUtR hole punching
    (docs/nat.md); ``false`` keeps them relayed."""
    autonat: str = "on"
    """AutoNAT v2 (docs/nat.md): ``on`` tests our addresses and serves
    others; ``lab`` also tests and dials private and loopback addresses
    (namespaces, tests); ``off`` does neither."""
    proxy: str = "off"
    """Serve the SOCKS5 + HTTP proxy for ``.ovl`` names at ``HOST:PORT``
    (docs/apps.md); ``off`` (the default) serves none."""
    services: Mapping[str, Any] = field(default_factory=dict)
    """Exposed TCP services (table ``[services]``: ``http = {port = 8080}``;
    docs/apps.md); ``overlay expose`` maintains it."""
    exit: Mapping[str, Any] = field(default_factory=dict)
    """Serve as an exit to the clear web (table ``[exit]``: ``enabled``,
    ``ports``, ``allow``, limits; docs/apps.md, "Exits")."""
    exit_via: str = "off"
    """Where the proxy sends hosts outside the zone: ``off`` (directly),
    ``auto`` (an exit found in the DHT), an exit's name or peer ID."""
    tun: bool = False
    """Create the virtual-IP interface ``ovl0`` (root and /dev/net/tun;
    docs/vip.md): every peer gets an IPv6 address in fd4f:766c:3000::/48
    and, on demand, an IPv4 one from 100.64.0.0/10, and the DNS front
    answers A/AAAA for names with them."""

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("`listen` needs at least one multiaddr")
        _check_addrs("listen", self.listen, need_peer=False)
        _check_addrs("bootstrap", self.bootstrap, need_peer=True)
        if not isinstance(self.api_socket, str) or "\0" in self.api_socket:
            raise ConfigError("`api_socket` must be a path string")
        if self.dht_mode not in ("server", "client"):
            raise ConfigError(f"`dht_mode` must be \"server\" or \"client\", not {self.dht_mode!r}")
        if (not isinstance(self.kad_protocol, str) or not self.kad_protocol.startswith("/")
                or len(self.kad_protocol) > 256 or "\n" in self.kad_protocol):
            raise ConfigError("`kad_protocol` must be a protocol ID such as /ovl/kad/1.0.0")
        parse_dns_address(self.dns)  # ConfigError naming the problem
        try:
            parse_dns_address(self.metrics)
        except ConfigError as exc:
            raise ConfigError(f"`metrics`: {exc}".replace("DNS address", "address")) from None
        try:
            zone = normalize_hostname(self.zone)
        except OverlayError as exc:
            raise ConfigError(f"`zone`: {exc}") from None
        if zone != self.zone:
            raise ConfigError(f"`zone` must be written in normal form, as {zone!r}")
        _check_stun(self.stun)
        if not isinstance(self.introducer, bool):
            raise ConfigError("`introducer` must be true or false")
        if not isinstance(self.mdns, bool):
            raise ConfigError("`mdns` must be true or false")
        if not isinstance(self.holepunch, bool):
            raise ConfigError("`holepunch` must be true or false")
        if not isinstance(self.upnp, bool):
            raise ConfigError("`upnp` must be true or false")
        if self.autonat not in ("on", "lab", "off"):
            raise ConfigError(f"`autonat` must be \"on\", \"lab\" or \"off\", not {self.autonat!r}")
        _check_addrs("relays", self.relays, need_peer=True)
        from overlay.relay.config import relay_limits_from_table

        relay_limits_from_table(self.relay_limits)
        try:
            parse_dns_address(self.proxy)
        except ConfigError as exc:
            raise ConfigError(f"`proxy`: {exc}".replace("DNS address", "address")) from None
        from overlay.apps.config import parse_services

        parse_services(self.services)
        if not isinstance(self.tun, bool):
            raise ConfigError("`tun` must be true or false")
        from overlay.apps.exit_client import check_exit_choice
        from overlay.apps.exit_policy import parse_exit_table

        try:
            parse_exit_table(self.exit)
            check_exit_choice(self.exit_via)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def with_listen(self, listen: tuple[str, ...] | list[str]) -> DaemonConfig:
        return replace(self, listen=tuple(listen))


_FIELDS: dict[str, type] = {
    "listen": tuple,
    "api_socket": str,
    "bootstrap": tuple,
    "dht_mode": str,
    "kad_protocol": str,
    "dns": str,
    "zone": str,
    "stun": tuple,
    "introducer": bool,
    "mdns": bool,
    "relays": tuple,
    "relay_limits": dict,
    "autonat": str,
    "holepunch": bool,
    "upnp": bool,
    "metrics": str,
    "proxy": str,
    "services": dict,
    "exit": dict,
    "exit_via": str,
    "tun": bool,
}


def parse_config(data: Mapping[str, Any], source: str = "config") -> DaemonConfig:
    """Build a config from a parsed TOML document."""
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION or isinstance(version, bool):
        raise ConfigError(
            f"{source}: unsupported config version {version!r} "
            f"(this overlay understands version {CONFIG_VERSION})"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "version":
            continue
        kind = _FIELDS.get(key)
        if kind is None:
            known = ", ".join(["version", *_FIELDS])
            raise ConfigError(f"{source}: unknown key `{key}` (known keys: {known})")
        if kind is tuple:
            if not isinstance(value, list):
                raise ConfigError(f"{source}: `{key}` must be a list of strings")
            value = tuple(value)
        elif not isinstance(value, kind):
            raise ConfigError(f"{source}: `{key}` must be a {kind.__name__}")
        kwargs[key] = value
    try:
        return DaemonConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def load_config(path: Path) -> DaemonConfig:
    """Read ``path``; a missing file means the defaults."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return DaemonConfig()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_config(data, str(path))


def config_document(config: DaemonConfig) -> dict[str, TomlValue]:
    """The config as the TOML document (and JSON object) it is written as."""
    return {
        "version": CONFIG_VERSION,
        "listen": list(config.listen),
        "api_socket": config.api_socket,
        "bootstrap": list(config.bootstrap),
        "dht_mode": config.dht_mode,
        "kad_protocol": config.kad_protocol,
        "dns": config.dns,
        "zone": config.zone,
        "stun": list(config.stun),
        "introducer": config.introducer,
        "mdns": config.mdns,
        "relays": list(config.relays),
        "relay_limits": dict(config.relay_limits),
        "autonat": config.autonat,
        "holepunch": config.holepunch,
        "upnp": config.upnp,
        "metrics": config.metrics,
        "proxy": config.proxy,
        "services": dict(config.services),
        "exit": dict(config.exit),
        "exit_via": config.exit_via,
        "tun": config.tun,
    }


def config_keys() -> list[str]:
    """The keys ``config set`` accepts."""
    return list(_FIELDS)


def with_value(config: DaemonConfig, key: str, values: Sequence[str],
               source: str = "config") -> DaemonConfig:
    """``config`` with ``key`` set from command-line text, validated by
    ``parse_config`` like the file itself.

    A list key takes each value as one entry (a single empty string clears
    it); any other key takes exactly one value.  Raises ``ConfigError``
    naming the key for an unknown key or a bad value."""
    kind = _FIELDS.get(key)
    if kind is None:
        raise ConfigError(f"unknown key `{key}` (known keys: {', '.join(_FIELDS)})")
    value: TomlValue
    if kind is dict:
        raise ConfigError(f"`{key}` is a table: edit it in the config file")
    if kind is tuple:
        value = [v for v in values if v != ""]
    elif len(values) != 1:
        raise ConfigError(f"`{key}` takes exactly one value, not {len(values)}")
    elif kind is bool:
        if values[0] not in ("true", "false"):
            raise ConfigError(f"`{key}` must be true or false, not {values[0]!r}")
        value = values[0] == "true"
    else:
        value = values[0]
    document = config_document(config)
    document[key] = value
    return parse_config(document, source)


def render_config(config: DaemonConfig) -> str:
    document = config_document(config)
    header = (
        "# overlay daemon configuration (docs/api.md lists the keys).\n"
        "# api_socket: empty means <home>/api.sock.\n"
    )
    return header + dumps(document)


def save_config(path: Path, config: DaemonConfig) -> None:
    atomic_write(path, render_config(config).encode("utf-8"), 0o600)
