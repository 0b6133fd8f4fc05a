"""Auto-relay: keep reservations on the relays we were told to use
(``--relay``) always, and on up to ``max_auto`` other relays while the node
is private; renew each before it expires; advertise the ``/p2p-circuit``
addresses they give us.

``RelayPlan`` is the pure part (which relays, when to renew, backoff after
failures, all at a given monotonic ``now``); ``AutoRelay`` is the loop that
carries it out through a ``RelayClient``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr, OverlayError
from overlay.host.events import HostListener
from overlay.host.identify import IdentifyInfo
from overlay.identity import PeerId
from overlay.multiaddrs import split_p2p
from overlay.relay.client import RelayClient
from overlay.relay.messages import HOP_PROTOCOL
from overlay.supervisor import RestartPolicy, Supervisor

__all__ = ["AutoRelayConfig", "RelayPlan", "AutoRelay", "parse_relay_addr", "hop_candidates"]

log = logging.getLogger(__name__)

IDLE_RECHECK: Final = 30.0
"""Seconds between looks at reachability and candidates when nothing is due."""


def parse_relay_addr(addr: str | Multiaddr) -> tuple[Multiaddr, PeerId]:
    """A ``--relay`` address must end in ``/p2p/<relay>``."""
    _, peer = split_p2p(addr)
    if peer is None:
        raise InvalidMultiaddr(f"a relay address must end in /p2p/<peer id>: {addr}")
    return Multiaddr(str(addr)), peer


@dataclass(frozen=True, slots=True)
class AutoRelayConfig:
    static: tuple[str, ...] = ()
    """Relay multiaddrs (with ``/p2p``) to keep a reservation on always."""
    max_auto: int = 2
    """Other relays to reserve on while the node is private."""
    renew_fraction: float = 0.75
    """Renew once this fraction of a reservation's lifetime has passed."""
    retry_initial: float = 5.0
    """Seconds before retrying a relay that failed once; doubles per failure."""
    retry_max: float = 300.0

    def __post_init__(self) -> None:
        if self.max_auto < 0:
            raise ValueError("max_auto must not be negative")
        if not 0 < self.renew_fraction < 1:
            raise ValueError("renew_fraction must be between 0 and 1")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError("retry_initial must be positive and at most retry_max")
        for addr in self.static:
            parse_relay_addr(addr)


@dataclass(slots=True)
class _RelayState:
    renew_at: float | None = None
    failures: int = 0
    retry_at: float = 0.0


@dataclass(slots=True)
class RelayPlan:
    """Which relays to hold and when to act, at monotonic ``now`` (pure)."""

    config: AutoRelayConfig
    static: tuple[PeerId, ...] = ()
    _state: dict[PeerId, _RelayState] = field(default_factory=dict)

    def wanted(self, private: bool, candidates: Sequence[PeerId],
               held: Sequence[PeerId]) -> list[PeerId]:
        """The static relays, then (when private) relays already held, then
        fresh candidates not in backoff, up to ``max_auto`` auto relays."""
        out = list(self.static)
        if not private:
            return out
        auto = [p for p in held if p not in out][: self.config.max_auto]
        for peer in candidates:
            if len(auto) >= self.config.max_auto:
                break
            if peer not in out and peer not in auto:
                auto.append(peer)
        return out + auto

    def due(self, relay: PeerId, now: float) -> bool:
        state = self._state.get(relay)
        if state is None:
            return True
        if state.renew_at is None:
            return now >= state.retry_at
        return now >= state.renew_at

    def in_backoff(self, relay: PeerId, now: float) -> bool:
        state = self._state.get(relay)
        return state is not None and state.renew_at is None and now < state.retry_at

    def reserved(self, relay: PeerId, now: float, lifetime: float) -> None:
        self._state[relay] = _RelayState(renew_at=now + lifetime * self.config.renew_fraction)

    def failed(self, relay: PeerId, now: float) -> None:
        state = self._state.setdefault(relay, _RelayState())
        state.failures += 1
        state.renew_at = None
        delay = min(self.config.retry_max,
                    self.config.retry_initial * 2 ** (state.failures - 1))
        state.retry_at = now + delay

    def drop(self, relay: PeerId) -> None:
        self._state.pop(relay, None)

    def next_deadline(self, relays: Sequence[PeerId]) -> float | None:
        times = []
        for relay in relays:
            state = self._state.get(relay)
            if state is None:
                return 0.0
            times.append(state.renew_at if state.renew_at is not None else state.retry_at)
        return min(times, default=None)


class _Host(Protocol):
    peer_id: PeerId

    async def connect(self, multiaddr: str | Multiaddr) -> object: ...

    def add_listener(self, listener: HostListener) -> None: ...

    def remove_listener(self, listener: HostListener) -> None: ...


class AutoRelay:
    """``async with AutoRelay(host, client, config, is_private=...)`` keeps
    the reservations until the block ends.  ``candidates`` lists peers known
    to serve hop (introducers first); ``on_addrs`` receives (added, removed)
    circuit addresses to advertise."""

    def __init__(
        self,
        host: _Host,
        client: RelayClient,
        config: AutoRelayConfig | None = None,
        *,
        is_private: Callable[[], bool] = lambda: False,
        candidates: Callable[[], Sequence[PeerId]] = lambda: (),
        on_addrs: Callable[[list[Multiaddr], list[Multiaddr]], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.client = client
        self.config = config or AutoRelayConfig()
        self._static = [parse_relay_addr(a) for a in self.config.static]
        self.plan = RelayPlan(self.config, tuple(p for _, p in self._static))
        self._is_private = is_private
        self._candidates = candidates
        self._on_addrs = on_addrs
        self._monotonic = monotonic
        self._clock = clock
        self._advertised: list[Multiaddr] = []
        self._wake = asyncio.Event()
        self._sup: Supervisor | None = None
        self.last_errors: dict[PeerId, str] = {}
        self._listener = HostListener(disconnected=self._on_disconnected,
                                      identified=self._on_identified)

    def _on_disconnected(self, peer: PeerId) -> None:
        # The relay forgets a reservation with its connection: reserve anew.
        if self.client.reservation(peer) is not None:
            self.client.forget(peer)
            self.plan.drop(peer)
            self.wake()

    def _on_identified(self, peer: PeerId, info: IdentifyInfo) -> None:
        if HOP_PROTOCOL in info.protocols and self.client.reservation(peer) is None:
            self.wake()

    async def __aenter__(self) -> AutoRelay:
        self.host.add_listener(self._listener)
        self._sup = await Supervisor("auto-relay", log).__aenter__()
        # A bug in one pass restarts the loop after back-off.
        self._sup.spawn(self._run, "auto-relay", restart=RestartPolicy())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.host.remove_listener(self._listener)
        sup, self._sup = self._sup, None
        if sup is not None:
            await sup.aclose()
        self._publish([])

    def wake(self) -> None:
        """Look again now (reachability changed, a relay appeared)."""
        self._wake.set()

    def advertised(self) -> list[Multiaddr]:
        return list(self._advertised)

    async def _run(self) -> None:
        while True:
            await self.step()
            deadline = self.plan.next_deadline(self._wanted())
            now = self._monotonic()
            wait = IDLE_RECHECK if deadline is None else max(0.0, min(IDLE_RECHECK,
                                                                      deadline - now))
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _wanted(self) -> list[PeerId]:
        held = [info.relay for info in self.client.reservations()]
        candidates = [p for p in self._candidates() if p != self.host.peer_id
                      and not self.plan.in_backoff(p, self._monotonic())]
        return self.plan.wanted(self._is_private(), candidates, held)

    async def step(self) -> None:
        """One pass: reserve or renew what is due, drop what is not wanted."""
        wanted = self._wanted()
        for relay in [i.relay for i in self.client.reservations()]:
            if relay not in wanted:
                self.client.forget(relay)
                self.plan.drop(relay)
        static = dict((peer, addr) for addr, peer in self._static)
        for relay in wanted:
            now = self._monotonic()
            if not self.plan.due(relay, now):
                continue
            try:
                if relay in static:
                    await self.host.connect(static[relay])
                info = await self.client.reserve(relay)
            except (OverlayError, TimeoutError, OSError) as exc:
                log.info("reservation on relay %s failed: %s", relay, exc)
                self.last_errors[relay] = str(exc) or type(exc).__name__
                self.client.forget(relay)
                self.plan.failed(relay, self._monotonic())
                continue
            self.last_errors.pop(relay, None)
            lifetime = max(1.0, info.expire - self._clock())
            self.plan.reserved(relay, self._monotonic(), lifetime)
        self._publish(self.client.circuit_addrs())

    def _publish(self, addrs: list[Multiaddr]) -> None:
        added = [a for a in addrs if a not in self._advertised]
        removed = [a for a in self._advertised if a not in addrs]
        self._advertised = list(addrs)
        if (added or removed) and self._on_addrs is not None:
            self._on_addrs(added, removed)


def hop_candidates(peers: Sequence[PeerId], supports: Callable[[PeerId, str], bool],
                   preferred: Sequence[PeerId] = ()) -> list[PeerId]:
    """Peers that serve hop, ``preferred`` ones (introducers) first."""
    first = [p for p in preferred if supports(p, HOP_PROTOCOL)]
    return first + [p for p in peers if p not in first and supports(p, HOP_PROTOCOL)]
