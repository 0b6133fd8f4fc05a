"""`overlay daemon`: start a node, print where it listens, run until a
signal, shut down cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import replace
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from overlay import AGENT_VERSION
from overlay.daemon.config import DaemonConfig, load_config
from overlay.daemon.home import Home
from overlay.daemon.init import init_home, load_identity
from overlay.daemon.node import Daemon, DaemonExtension
from overlay.identity import PrivateKey

__all__ = ["READY_LINE", "default_extensions", "run_daemon", "event_loop_factory"]

log = logging.getLogger(__name__)

READY_LINE = "ready"
"""The last line the daemon prints at start; scripts wait for it."""


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed (the ``fast`` extra), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def default_extensions(
    key: PrivateKey | None = None, config: DaemonConfig | None = None, *,
    dns_required: bool = False,
) -> list[DaemonExtension]:
    """What `overlay daemon` runs besides the host: the peer memory
    (``<home>/peers.json``, so a restart is not isolated), the DHT (its mode,
    protocol ID and bootstrap peers come from the daemon config) and, given
    the key, naming with its DNS front (``dns`` and ``zone`` from the
    config; a busy DNS port is fatal only when ``dns_required``)."""
    from overlay.daemon.ops_dht import DhtExtension
    from overlay.daemon.persist_peers import PeerMemoryExtension
    from overlay.mdns.daemon_ext import MdnsExtension
    from overlay.nat.autonat_ext import AutoNATExtension
    from overlay.nat.daemon_ext import NatExtension
    from overlay.nat.upnp_ext import UpnpExtension
    from overlay.rendezvous.daemon_ext import RendezvousExtension
    from overlay.daemon.ops_stats import StatsExtension
    from overlay.naming.dns_front import parse_dns_address

    # Limit counters and the Prometheus endpoint (`metrics`, off by default).
    stats = StatsExtension(parse_dns_address(config.metrics) if config is not None else None)
    if key is None:
        dht_only = DhtExtension()
        return [NatExtension(), UpnpExtension(), AutoNATExtension(), dht_only,
                PeerMemoryExtension(dht_only),
                MdnsExtension(),
                RendezvousExtension(None), stats]
    from overlay.daemon.ops_name import naming_extensions
    from overlay.naming.config import NamingConfig
    from overlay.naming.service import NameServiceConfig

    config = config or DaemonConfig()
    names = NameServiceConfig(naming=NamingConfig(zone=config.zone))
    dht, naming = naming_extensions(key, dns=parse_dns_address(config.dns),
                                    dns_required=dns_required, names=names)
    # Last: it bootstraps the running DHT from peers remembered across
    # restarts and, leaving first, saves them while the DHT still runs.
    # mDNS after the DHT: the peers it dials reach a running kad service
    # through identify.
    # Rendezvous serves when the config says `introducer`; its client ops
    # sign registrations with the node's key.
    # Circuit relay after NAT: auto-relay reads its classification.
    from overlay.relay.daemon_ext import RelayExtension
    from overlay.nat.dcutr_ext import DcutrExtension

    # Services, forwards and the proxy resolve names and publish exposures
    # through naming, so after it.
    from overlay.apps.daemon_ext import AppsExtension

    apps = AppsExtension(config.services, parse_dns_address(config.proxy))
    # AutoNAT after STUN and UPnP: their mapped addresses are among its
    # candidates; UPnP deletes its mapping after AutoNAT has stopped.
    # DCUtR before the relay: its handler is in place before circuits arrive.
    return [NatExtension(), UpnpExtension(), AutoNATExtension(), dht, naming,
            PeerMemoryExtension(dht),
            MdnsExtension(),
            RendezvousExtension(key), DcutrExtension(), RelayExtension(key), apps, stats,
            *_vip_extensions(config)]


def _vip_extensions(config: DaemonConfig) -> list[DaemonExtension]:
    """The virtual-IP interface with ``tun`` (after naming: it hooks the
    DNS front and ``name_resolve``)."""
    if not config.tun:
        return []
    from overlay.vip.daemon_ext import VipExtension

    return [VipExtension()]


async def run_daemon(
    home: Home,
    out: TextIO,
    listen: Sequence[str] = (),
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    as_json: bool = False,
    bootstrap: Sequence[str] = (),
    extensions: Sequence[DaemonExtension] | None = None,
    dht_mode: str | None = None,
    kad_protocol: str | None = None,
    dns: str | None = None,
    stun: Sequence[str] = (),
    introducer: bool | None = None,
    mdns: bool | None = None,
    relays: Sequence[str] = (),
    metrics: str | None = None,
    proxy: str | None = None,
    holepunch: bool | None = None,
    upnp: bool | None = None,
    exit: Mapping[str, Any] | None = None,
    exit_via: str | None = None,
    tun: bool | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or ``stop`` is set); return the exit code.

    A missing key is created first (as ``overlay init`` would), so a fresh
    machine needs one command.  Raises ``DaemonError``/``ConfigError`` with a
    one-line message when the node cannot start.
    """
    if not home.key_file.exists():
        result = init_home(home)
        if not as_json:
            print(f"initialized {home.root} with a new identity key", file=out)
        key = result.key
    else:
        key = load_identity(home)
    config = load_config(home.config_file)
    if listen:
        config = config.with_listen(list(listen))
    if bootstrap:
        config = replace(config, bootstrap=tuple(bootstrap))
    if dht_mode is not None:
        config = replace(config, dht_mode=dht_mode)
    if kad_protocol is not None:
        config = replace(config, kad_protocol=kad_protocol)
    if dns is not None:
        config = replace(config, dns=dns)
    if stun:
        config = replace(config, stun=tuple(stun))
    if introducer is not None:
        config = replace(config, introducer=introducer)
    if mdns is not None:
        config = replace(config, mdns=mdns)
    if relays:
        config = replace(config, relays=tuple(relays))
    if metrics is not None:
        config = replace(config, metrics=metrics)
    if proxy is not None:
        config = replace(config, proxy=proxy)
    if holepunch is not None:
        config = replace(config, holepunch=holepunch)
    if upnp is not None:
        config = replace(config, upnp=upnp)
    if exit is not None:
        config = replace(config, exit={**config.exit, **exit})
    if exit_via is not None:
        config = replace(config, exit_via=exit_via)
    if tun is not None:
        config = replace(config, tun=tun)
    if extensions is None:
        # An address asked for on the command line must be served; the
        # configured one (usually the default) only warns when it is busy.
        extensions = default_extensions(key, config, dns_required=dns is not None)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    stopping = time.monotonic()
    async with Daemon(home, config, key, extensions=extensions, stop=stop) as daemon:
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            if as_json:
                print(json.dumps({"event": READY_LINE, "peer_id": str(daemon.peer_id),
                                  "addrs": daemon.full_addrs(), "api_socket": str(daemon.api_path),
                                  "dns": _dns_text(extensions),
                                  "metrics": _metrics_text(extensions),
                                  "proxy": _address_text(extensions, "proxy_address"),
                                  "agent_version": AGENT_VERSION}), file=out, flush=True)
            else:
                print(f"overlay daemon ({AGENT_VERSION})", file=out)
                print(f"peer id: {daemon.peer_id}", file=out)
                for addr in daemon.full_addrs():
                    print(f"listening on {addr}", file=out)
                print(f"api socket: {daemon.api_path}", file=out)
                dns_text = _dns_text(extensions)
                if dns_text is not None:
                    print(f"dns: {dns_text} (udp and tcp)", file=out)
                metrics_at = _metrics_text(extensions)
                if metrics_at is not None:
                    print(f"metrics: http://{metrics_at}/metrics", file=out)
                proxy_at = _address_text(extensions, "proxy_address")
                if proxy_at is not None:
                    print(f"proxy: {proxy_at} (SOCKS5 and HTTP; PAC file at "
                          f"http://{proxy_at}/proxy.pac)", file=out)
                print(READY_LINE, file=out, flush=True)
            await stop.wait()
            stopping = time.monotonic()
            log.info("shutting down: telling %d connected peer(s) we are going away",
                     len(daemon.host.peers()))
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
    log.info("stopped in %.2f s", time.monotonic() - stopping)
    return 0


def _metrics_text(extensions: Sequence[DaemonExtension]) -> str | None:
    """Where the Prometheus endpoint listens, if it runs."""
    return _address_text(extensions, "metrics_address")


def _dns_text(extensions: Sequence[DaemonExtension]) -> str | None:
    """Where the DNS front listens, if one runs."""
    return _address_text(extensions, "dns_address")


def _address_text(extensions: Sequence[DaemonExtension], attr: str) -> str | None:
    for extension in extensions:
        address = getattr(extension, attr, None)
        if address is not None:
            host, port = address
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None
