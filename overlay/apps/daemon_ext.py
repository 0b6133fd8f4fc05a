"""The apps daemon extension: exposures (config table ``services``), the
proxy (config key ``proxy``), forwards, and the ops ``expose_add``,
``expose_list``, ``expose_remove``, ``forward_add``, ``forward_list`` and
``forward_close`` (docs/api.md, "Services, forwards and the proxy").

Exposing a service adds ``SERVICE:PORT`` to the record of every name the
node owns and republishes it, so ``alice.ovl``'s ``http`` is found by
name; removing it takes the entry out again.  Exposures are written to
``config.toml`` (``[services]``) and forwards to ``forwards.json``
(``forward_store``), so a restarted daemon serves them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any

from overlay.apps.config import Exposure, exposure_table, parse_exposure, parse_services
from overlay.apps.connector import Connector, NameLookup
from overlay.apps.exit_client import ExitDialer, check_exit_choice
from overlay.apps.exit_policy import ExitConfig, parse_exit_table
from overlay.apps.exit_proto import EXIT_PROTOCOL, exit_provider_key
from overlay.apps.exit_server import ExitServer, Resolve, system_resolve
from overlay.apps.exposer import Exposer
from overlay.apps.forward import Forward, Forwards
from overlay.apps.forward_store import (
    FORWARDS_FILE,
    FORWARDS_FORMAT,
    FORWARDS_VERSION,
    SavedForward,
    forwards_body,
    load_forwards,
)
from overlay.apps.proxy import ProxyServer
from overlay.apps.pump import Counters
from overlay.apps.service_proto import SERVICE_PROTOCOL, check_service_name
from overlay.apps.tcp import ConnectionGroup, format_hostport
from overlay.daemon.api import ApiCall
from overlay.daemon.error_codes import DhtErrorCode, NameErrorCode
from overlay.daemon.errors import ApiError, BadRequest, ListenFailed
from overlay.daemon.protocol import ErrorCode
from overlay.errors import OverlayError
from overlay.identity import PeerId
from overlay.naming.names import normalize_hostname
from overlay.naming.record import Service
from overlay.statefile import (
    CorruptState,
    Snapshot,
    StateWriteFailed,
    StateWriter,
    remove_stale_tmp,
)
from overlay.supervisor import Supervisor

__all__ = ["AppsExtension", "parse_hostport"]

log = logging.getLogger(__name__)

_MAX_FORWARDS = 256


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[V6]:PORT`` with port 0..65535 (0: any free port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:9000)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:9000")
    return host, int(port_text)


def _counters_json(c: Counters) -> dict[str, int]:
    return {"connections": c.connections, "active": c.active, "failed": c.failed}


def _exposure_json(e: Exposure, c: Counters | None) -> dict[str, Any]:
    c = c or Counters()
    # For an exposure, "up" is the local service's answer leaving the node.
    return {"service": e.service, "host": e.host, "port": e.port, "allow": list(e.allow),
            "bytes_out": c.up, "bytes_in": c.down, **_counters_json(c)}


def _forward_json(f: Forward) -> dict[str, Any]:
    return {"listen": f.listen, "name": f.name, "service": f.service, "listening": True,
            "bytes_out": f.counters.up, "bytes_in": f.counters.down,
            "last_error": f.last_error, **_counters_json(f.counters)}


def _unbound_json(listen: str, target: str, error: str) -> dict[str, Any]:
    """A saved forward whose address could not be bound at start."""
    name, _, service = target.rpartition(":")
    return {"listen": listen, "name": name, "service": service, "listening": False,
            "bytes_out": 0, "bytes_in": 0, "last_error": error,
            **_counters_json(Counters())}


class AppsExtension:
    """``Daemon(..., extensions=[dht, names, AppsExtension(services, proxy)])``;
    after naming, whose service it uses to resolve names and publish
    exposures."""

    def __init__(self, services: Mapping[str, Any] | None = None,
                 proxy: tuple[str, int] | None = None, *, persist: bool = True,
                 exit: ExitConfig | None = None, exit_via: str | None = None,
                 exit_resolve: Resolve = system_resolve) -> None:
        """``exit`` (serve as an exit) and ``exit_via`` (``off``, ``auto``,
        a name or a peer ID: where the proxy sends hosts outside the zone)
        default to the daemon config's ``[exit]`` table and ``exit_via``.
        ``exit_resolve`` is the exit's resolver (tests give a hosts mapping,
        so a browser test needs no DNS)."""
        self.initial = parse_services(services or {})
        self.proxy = proxy
        self.exit = exit
        self.exit_via = None if exit_via is None else check_exit_choice(exit_via)
        self._exit_resolve = exit_resolve
        self.exit_server: ExitServer | None = None
        """Serving ``/ovl/exit/1.0.0`` (``overlay stats`` shows it)."""
        self.exit_dialer: ExitDialer | None = None
        self.persist = persist
        """Write exposures to ``<home>/config.toml`` and forwards to
        ``<home>/forwards.json``."""
        self._unbound: dict[str, tuple[str, str]] = {}
        """Saved forwards whose address could not be bound at start:
        listen → (target, error).  Kept in the file and listed, so a busy
        port does not silently lose the user's forward."""
        self._forward_writer: StateWriter | None = None
        self.proxy_address: tuple[str, int] | None = None
        """The bound proxy address once running (port 0 resolved)."""
        self.exposer: Exposer | None = None
        self.forwards: Forwards | None = None
        self.proxy_server: ProxyServer | None = None
        self._daemon: Any = None
        self._names: Callable[[], Any] = lambda: None
        self._lock = asyncio.Lock()

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[AppsExtension]:
        return self._run(daemon)

    def _find_names(self, daemon: Any) -> Callable[[], Any]:
        from overlay.daemon.ops_name import NameExtension

        for extension in daemon.extensions:
            if isinstance(extension, NameExtension):
                found = extension
                return lambda: found.names
        return lambda: None

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[AppsExtension]:
        self._daemon = daemon
        self._names = self._find_names(daemon)
        host = daemon.host
        exposer = Exposer(self._name_peers)
        exposer.load(self.initial)
        zone = daemon.config.zone

        def names() -> NameLookup | None:
            service: NameLookup | None = self._names()
            return service

        def local(service: str) -> tuple[str, int] | None:
            e = exposer.exposures.get(service)
            return None if e is None else (e.host, e.port)

        connector = Connector(host, names, zone, local=local)
        exit_config = self.exit or parse_exit_table(getattr(daemon.config, "exit", {}) or {})
        exit_via = self.exit_via or check_exit_choice(getattr(daemon.config, "exit_via", "off"))
        if exit_via != "off":
            self.exit_dialer = ExitDialer(host, exit_via, zone, names=names,
                                          find_providers=self._find_exits,
                                          dial=connector.dial_peer)
            connector.direct = self.exit_dialer
        async with AsyncExitStack() as stack:
            group = await stack.enter_async_context(ConnectionGroup())
            sup = await stack.enter_async_context(Supervisor("apps", log))
            host.set_stream_handler(SERVICE_PROTOCOL, exposer.handle)
            stack.callback(host.remove_stream_handler, SERVICE_PROTOCOL)
            if exit_config.enabled:
                server = ExitServer(exit_config, self._name_peers, self._exit_resolve)
                host.set_stream_handler(EXIT_PROTOCOL, server.handle)
                stack.callback(host.remove_stream_handler, EXIT_PROTOCOL)
                self.exit_server = server
                log.info("serving as an exit to ports %s for %s", ",".join(
                    map(str, exit_config.ports)), "anyone" if exit_config.open_to_anyone
                    else ", ".join(exit_config.allow) or "nobody (set exit.allow)")
                if exit_config.unsafe_lab_destinations:
                    log.warning("exit: unsafe_lab_destinations lets clients reach %s; "
                                "for tests and labs only",
                                ", ".join(exit_config.unsafe_lab_destinations))
                sup.spawn(partial(self._announce_exit, server, zone), "announcing the exit")
            self.exposer = exposer
            self.forwards = Forwards(group, connector)
            self._unbound.clear()
            if self.persist:
                home = daemon.home.root
                remove_stale_tmp(home, [FORWARDS_FILE])
                self._forward_writer = await stack.enter_async_context(StateWriter(
                    Snapshot(home / FORWARDS_FILE, FORWARDS_FORMAT, FORWARDS_VERSION,
                             self._forwards_body), "forwards", interval=0.05))
                stack.callback(setattr, self, "_forward_writer", None)
                await self._restore_forwards(self.forwards)
            if self.proxy is not None:
                proxy = ProxyServer(group, connector)
                try:
                    listener = await proxy.start(*self.proxy)
                except OSError as exc:
                    raise ListenFailed(f"cannot serve the proxy on "
                                       f"{format_hostport(*self.proxy)}: "
                                       f"{exc.strerror or exc}") from exc
                self.proxy_server = proxy
                self.proxy_address = listener.address
            self._register(daemon.api)
            naming = self._names()
            if naming is not None:
                # Names registered from now on carry the exposures too.
                naming.default_services = lambda: self._exposed_services(exposer)
                stack.callback(setattr, naming, "default_services", None)
            if self.initial:
                # Names owned before a restart (or edited offline) get the
                # configured services; the DHT may take a while, so in the
                # background.  Leaving the block cancels and awaits it.
                sup.spawn(self._sync_names, "publishing services")
            try:
                yield self
            finally:
                self.exposer = None
                self.forwards = None
                self.proxy_server = None
                self.exit_server = None
                self.exit_dialer = None

    def _register(self, api: Any) -> None:
        api.register("expose_add", self.expose_add)
        api.register("expose_list", self.expose_list)
        api.register("expose_remove", self.expose_remove)
        api.register("forward_add", self.forward_add)
        api.register("forward_list", self.forward_list)
        api.register("forward_close", self.forward_close)

    # -- exits ---------------------------------------------------------------------

    def _kad(self) -> Any:
        from overlay.daemon.ops_dht import DhtExtension

        for extension in self._daemon.extensions:
            if isinstance(extension, DhtExtension):
                return extension.kad
        return None

    async def _find_exits(self, key: bytes) -> list[tuple[PeerId, tuple[bytes, ...]]]:
        kad = self._kad()
        if kad is None:
            return []
        return [(p.peer_id, tuple(p.addrs)) for p in await kad.find_providers(key)]

    async def _announce_exit(self, server: ExitServer, zone: str) -> None:
        """Provide the exit key until at least one peer took it; the DHT
        re-provides it from then on."""
        delay = 1.0
        while True:
            kad = self._kad()
            told = 0
            if kad is not None:
                try:
                    told = await kad.provide(exit_provider_key(zone))
                except (OverlayError, TimeoutError) as exc:
                    log.info("could not announce the exit yet: %s", exc)
            if told:
                log.info("announced as an exit to %d peer(s)", told)
                server.announced.set()
                return
            await asyncio.sleep(delay)  # a retry interval, not synchronisation
            delay = min(delay * 2, 60.0)

    # -- names ---------------------------------------------------------------------

    async def _name_peers(self, name: str) -> tuple[str, ...]:
        names = self._names()
        if names is None:
            return ()
        resolution = await names.resolve(name)
        return tuple(str(PeerId.from_bytes(p.peer_id)) for p in resolution.record.peers)

    async def _republish(self, change: Callable[[tuple[Service, ...]], tuple[Service, ...]],
                         ) -> tuple[list[str], list[str]]:
        from overlay.naming.service import Targets

        names = self._names()
        if names is None:
            return [], []
        published: list[str] = []
        failed: list[str] = []
        for entry in names.owned():
            record = entry.record
            services = change(record.services)
            if services == record.services:
                continue
            try:
                await names.update(record.name, Targets(services=services))
                published.append(record.name)
            except (OverlayError, TimeoutError) as exc:
                failed.append(f"{record.name}: {exc}")
        return published, failed

    @staticmethod
    def _exposed_services(exposer: Exposer) -> tuple[Service, ...]:
        return tuple(Service(e.service, e.port) for _, e in sorted(exposer.exposures.items()))

    async def _sync_names(self) -> None:
        wanted = {e.service: e.port for e in self.initial.values()}

        def add_missing(services: tuple[Service, ...]) -> tuple[Service, ...]:
            have = {(s.protocol, s.port) for s in services if not s.target}
            return services + tuple(Service(n, p) for n, p in sorted(wanted.items())
                                    if (n, p) not in have)

        published, failed = await self._republish(add_missing)
        for line in failed:
            log.info("could not publish services in %s", line)

    # -- persistence -------------------------------------------------------------------

    async def _save(self) -> None:
        if not self.persist or self.exposer is None:
            return
        from overlay.daemon.config import load_config, save_config

        path = self._daemon.home.config_file
        table = exposure_table(self.exposer.exposures)

        def write() -> None:
            save_config(path, replace(load_config(path), services=table))

        try:
            await asyncio.to_thread(write)
        except (OverlayError, OSError) as exc:
            raise ApiError(ErrorCode.FAILED, f"the exposure runs but could not be saved "
                           f"in {path}: {exc}") from exc

    # -- ops ---------------------------------------------------------------------------

    def _running(self) -> tuple[Exposer, Forwards]:
        if self.exposer is None or self.forwards is None:
            raise ApiError(ErrorCode.FAILED, "the service layer is not running")
        return self.exposer, self.forwards

    async def expose_add(self, call: ApiCall) -> Mapping[str, Any]:
        exposer, _ = self._running()
        service = call.required_str("service")
        allow = call.args.get("allow", [])
        try:
            exposure = parse_exposure(service, call.args.get("port"),
                                      call.args.get("host", "127.0.0.1"), allow)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        async with self._lock:
            exposer.set(exposure)
            await self._save()

            def put(services: tuple[Service, ...]) -> tuple[Service, ...]:
                kept = tuple(s for s in services if s.protocol != service or s.target)
                return kept + (Service(service, exposure.port),)

            published, failed = await self._republish(put)
        return _exposure_json(exposure, exposer.counters.get(service)) | {
            "published": published, "publish_failed": failed}

    async def expose_list(self, call: ApiCall) -> Mapping[str, Any]:
        exposer, _ = self._running()
        return {"services": [_exposure_json(e, exposer.counters.get(name))
                             for name, e in sorted(exposer.exposures.items())],
                "refused": dict(exposer.refused),
                "proxy": None if self.proxy_address is None
                else format_hostport(*self.proxy_address)}

    async def expose_remove(self, call: ApiCall) -> Mapping[str, Any]:
        exposer, _ = self._running()
        service = call.required_str("service")
        async with self._lock:
            removed = exposer.remove(service)
            if removed is None:
                raise ApiError(DhtErrorCode.NOT_FOUND, f"no service called {service!r} is exposed")
            await self._save()
            published, failed = await self._republish(
                lambda services: tuple(s for s in services
                                       if s.protocol != service or s.target))
        return {"service": service, "published": published, "publish_failed": failed}

    # -- forwards on disk ----------------------------------------------------------

    def _forwards_body(self) -> dict[str, Any]:
        live = self.forwards.list() if self.forwards is not None else []
        return forwards_body(
            [SavedForward(f.listen, f"{f.name}:{f.service}") for f in live]
            + [SavedForward(listen, target) for listen, (target, _) in self._unbound.items()])

    async def _restore_forwards(self, forwards: Forwards) -> None:
        """Open the saved forwards again; one that cannot be bound is logged,
        listed with its error and kept in the file."""
        path = self._daemon.home.root / FORWARDS_FILE
        try:
            saved, skipped = load_forwards(path, _MAX_FORWARDS)
        except CorruptState as exc:
            log.error("forwards not restored: %s", exc)
            return
        for line in skipped:
            log.warning("%s: skipped %s", path, line)
        for entry in saved:
            try:
                host, port = parse_hostport(entry.listen)
                name, service = self._target(entry.target)
            except (ValueError, ApiError) as exc:
                log.warning("%s: skipped %s → %s: %s", path, entry.listen, entry.target, exc)
                continue
            try:
                await forwards.add(host, port, name, service)
            except OSError as exc:
                error = f"cannot listen on {entry.listen}: {exc.strerror or exc}"
                log.warning("forward %s → %s not restored: %s", entry.listen, entry.target,
                            error)
                self._unbound[entry.listen] = (entry.target, error)
        if saved:
            log.info("restored %d of %d saved forwards", len(saved) - len(self._unbound),
                     len(saved))

    async def _save_forwards(self, what: str) -> None:
        """Until the forwards file holds the change (the reply promises it)."""
        writer = self._forward_writer
        if writer is None:
            return
        writer.mark_dirty()
        try:
            await writer.flush()
        except StateWriteFailed as exc:
            raise ApiError(ErrorCode.FAILED, f"{what}, but the forwards file could not be "
                           f"written: {exc}") from exc

    async def forward_add(self, call: ApiCall) -> Mapping[str, Any]:
        _, forwards = self._running()
        try:
            host, port = parse_hostport(call.required_str("listen"))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        name, service = self._target(call.required_str("target"))
        if len(forwards.list()) + len(self._unbound) >= _MAX_FORWARDS:
            raise ApiError(ErrorCode.LIMIT_EXCEEDED, f"at most {_MAX_FORWARDS} forwards")
        try:
            forward = await forwards.add(host, port, name, service)
        except OSError as exc:
            raise ApiError(ErrorCode.FAILED, f"cannot listen on {format_hostport(host, port)}: "
                           f"{exc.strerror or exc}") from None
        self._unbound.pop(forward.listen, None)  # bound at last
        await self._save_forwards(f"the forward on {forward.listen} runs")
        return _forward_json(forward)

    def _target(self, text: str) -> tuple[str, str]:
        name, sep, service = text.rpartition(":")
        if not sep or not name:
            raise BadRequest(f"{text!r} is not NAME:SERVICE (such as alice.ovl:http)")
        try:
            check_service_name(service)
            name = normalize_hostname(name)
        except (ValueError, OverlayError) as exc:
            raise ApiError(NameErrorCode.INVALID_NAME, f"{text!r}: {exc}") from None
        zone = self._daemon.config.zone
        if not name.endswith("." + zone):
            raise ApiError(NameErrorCode.INVALID_NAME, f"{name} is outside the .{zone} zone")
        return name, service

    async def forward_list(self, call: ApiCall) -> Mapping[str, Any]:
        _, forwards = self._running()
        return {"forwards": [_forward_json(f) for f in forwards.list()]
                + [_unbound_json(listen, target, error)
                   for listen, (target, error) in self._unbound.items()]}

    async def forward_close(self, call: ApiCall) -> Mapping[str, Any]:
        _, forwards = self._running()
        listen = call.required_str("listen")
        try:
            key = format_hostport(*parse_hostport(listen))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        forward = await forwards.close(key)
        if forward is None:
            unbound = self._unbound.pop(key, None)
            if unbound is None:
                raise ApiError(DhtErrorCode.NOT_FOUND, f"no forward listens on {key}")
            await self._save_forwards(f"the forward on {key} is closed")
            return _unbound_json(key, *unbound)
        await self._save_forwards(f"the forward on {key} is closed")
        return _forward_json(forward)
