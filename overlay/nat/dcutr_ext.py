"""DCUtR inside the daemon: the ``DcutrExtension`` and its
``holepunch_status`` op (reply in docs/api.md, "Hole punching").

On by default; the config key ``holepunch = false`` (``overlay daemon
--no-holepunch``) turns it off.  With ``autonat = "lab"`` documentation-range
and loopback addresses count as public, as AutoNAT's lab mode does, so the
netns lab and loopback tests can punch.  STUN-mapped addresses from the
``NatExtension`` join our candidates when it runs.

Birthday punching (``/ovl/birthday/1.0.0``, docs/nat.md) runs beside it
and is tried first by the DCUtR initiator; its NAT kind comes from STUN's
mapping verdict, else from identify's observed addresses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any

from overlay.daemon.api import ApiCall
from overlay.errors import InvalidMultiaddr
from overlay.multiaddrs import parse_quic_multiaddr, split_p2p
from overlay.nat.birthday_core import BirthdayConfig, nat_kind_from
from overlay.nat.birthday_messages import NatKind
from overlay.nat.birthday_service import BirthdayService
from overlay.nat.dcutr_service import DcutrService, DcutrServiceConfig

__all__ = ["DcutrExtension"]


class DcutrExtension:
    """Runs a ``DcutrService`` on the daemon's host; ``service`` is it while
    the daemon runs (None with ``holepunch = false``)."""

    def __init__(self, config: DcutrServiceConfig | None = None,
                 birthday: BirthdayConfig | None = None) -> None:
        self._explicit = config
        self._birthday = birthday
        self.service: DcutrService | None = None
        self.birthday: BirthdayService | None = None

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[DcutrService | None]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[DcutrService | None]:
        daemon.api.register("holepunch_status", self.holepunch_status)
        if self._explicit is None and not getattr(daemon.config, "holepunch", True):
            yield None
            return
        config = self._explicit or DcutrServiceConfig()
        if self._explicit is None and getattr(daemon.config, "autonat", "on") == "lab":
            config = replace(config, core=replace(config.core, allow_private=True))
        bday_config = self._birthday or BirthdayConfig(
            allow_private=config.core.allow_private)
        async with DcutrService(daemon.host, config,
                                extra_addrs=lambda: _stun_addrs(daemon),
                                relay_client=lambda: _relay_client(daemon)) as service, \
                BirthdayService(daemon.host, bday_config,
                                nat_kind=lambda: _nat_kind(daemon),
                                context=service.address_context,
                                public=lambda: _public_endpoints(daemon)) as birthday:
            service.pre_punch = birthday.try_upgrade
            service.handover = birthday.outcome_with
            self.service = service
            self.birthday = birthday
            try:
                yield service
            finally:
                self.service = None
                self.birthday = None

    async def holepunch_status(self, call: ApiCall) -> Mapping[str, Any]:
        service = self.service
        if service is None:
            return {"enabled": False, "active": [], "counters": {}, "recent": []}
        birthday = self.birthday
        return {"enabled": True, **service.status(),
                "birthday": birthday.status() if birthday is not None else None}


def _stun_addrs(daemon: Any) -> Iterable[str]:
    """Public addresses STUN servers mapped us to, if STUN runs."""
    from overlay.nat.daemon_ext import NatExtension, _multiaddr

    for extension in getattr(daemon, "extensions", ()):
        if isinstance(extension, NatExtension):
            report = extension.report()
            if report is None:
                return []
            return [_multiaddr(p.address) for p in report.public]
    return []


def _relay_client(daemon: Any) -> Any:
    """The relay extension's client (its stop CONNECTs carry hints), once
    it runs: the relay extension starts after this one."""
    from overlay.relay.daemon_ext import RelayExtension

    for extension in getattr(daemon, "extensions", ()):
        if isinstance(extension, RelayExtension):
            return extension.client
    return None


def _nat_report(daemon: Any) -> Any:
    from overlay.nat.daemon_ext import NatExtension

    for extension in getattr(daemon, "extensions", ()):
        if isinstance(extension, NatExtension):
            return extension.report()
    return None


def _observed(daemon: Any) -> list[tuple[str, int]]:
    """Our public endpoints as identify observers reported them, most reporters first."""
    out: list[tuple[str, int]] = []
    for addr, _ in daemon.host.observed_addrs.addrs():
        try:
            parsed = parse_quic_multiaddr(split_p2p(addr)[0])
        except InvalidMultiaddr:
            continue
        if not parsed.is_dns:
            out.append((parsed.host, parsed.port))
    return out


def _nat_kind(daemon: Any) -> NatKind:
    report = _nat_report(daemon)
    mapping = report.mapping.behaviour.value if report is not None else None
    return nat_kind_from(mapping, _observed(daemon))


def _public_endpoints(daemon: Any) -> list[tuple[str, int]]:
    """STUN's public addresses (best attested first), then identify's."""
    report = _nat_report(daemon)
    found: dict[tuple[str, int], None] = {}
    if report is not None:
        for public in report.public:
            found.setdefault((str(public.address[0]), int(public.address[1])))
    for endpoint in _observed(daemon):
        found.setdefault(endpoint)
    return list(found)
