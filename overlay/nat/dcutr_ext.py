"""DCUtR inside the daemon: the ``DcutrExtension`` and its
``holepunch_status`` op (reply in docs/api.md, "Hole punching").

On by default; the config key ``holepunch = false`` (``overlay daemon
--no-holepunch``) turns it off.  With ``autonat = "lab"`` documentation-range
and loopback addresses count as public, as AutoNAT's lab mode does, so the
netns lab and loopback tests can punch.  STUN-mapped addresses from the
``NatExtension`` join our candidates when it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any

from overlay.daemon.api import ApiCall
from overlay.daemon.errors import BadRequest
from overlay.nat.dcutr_service import DcutrService, DcutrServiceConfig

__all__ = ["DcutrExtension"]


class DcutrExtension:
    """Runs a ``DcutrService`` on the daemon's host; ``service`` is it while
    the daemon runs (None with ``holepunch = false``)."""

    def __init__(self, config: DcutrServiceConfig | None = None) -> None:
        self._explicit = config
        self.service: DcutrService | None = None

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
        async with DcutrService(daemon.host, config,
                                extra_addrs=lambda: _stun_addrs(daemon)) as service:
            self.service = service
            try:
                yield service
            finally:
                self.service = None

    async def holepunch_status(self, call: ApiCall) -> Mapping[str, Any]:
        if call.args:
            raise BadRequest(f"holepunch_status takes no arguments, got {sorted(call.args)}")
        service = self.service
        if service is None:
            return {"enabled": False, "active": [], "counters": {}, "recent": []}
        return {"enabled": True, **service.status()}


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
