"""The asyncio driver of STUN on the node's own QUIC sockets.

It hooks every endpoint's non-QUIC datagram hook, so binding requests leave
from the socket peers dial and the mapping a server reports is the one they
will use; it carries out the pure ``StunAgent``'s actions and runs its
timers.  A round (at start, every ``refresh_interval`` and on demand) asks
every configured server from every socket of the server's address family,
then runs RFC 5780 tests against servers that announce another address.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Protocol, runtime_checkable

from overlay.errors import TransportError
from overlay.nat.agent import StunAgent, normalize_address
from overlay.nat.behaviour import (
    Behaviour,
    FilteringProbe,
    MappingObservation,
    PublicAddress,
    Verdict,
    classify_filtering,
    classify_mapping,
    nat_type,
    public_addresses,
)
from overlay.nat.config import StunServiceConfig, parse_stun_server
from overlay.nat.stun import (
    Address,
    BindingAction,
    BindingFailed,
    BindingSucceeded,
    BindingTimedOut,
    SendDatagram,
)
from overlay.supervisor import RestartPolicy, Supervisor, run_supervised
from overlay.transport.endpoint import is_stun

__all__ = ["DatagramSocket", "Observation", "SocketReport", "NatReport", "StunService"]

log = logging.getLogger(__name__)


@runtime_checkable
class DatagramSocket(Protocol):
    """The slice of ``QuicEndpoint`` STUN needs."""

    @property
    def local_address(self) -> tuple[str, int]: ...

    def set_datagram_hook(self, hook: Callable[[bytes, tuple[str, int]], bool] | None) -> None: ...

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...


class EndpointSource(Protocol):
    def endpoints(self) -> Sequence[object]: ...


@dataclass(frozen=True, slots=True)
class Observation:
    server: Address
    mapped: Address
    from_xor: bool
    rtt: float
    at: float
    """Monotonic time of the answer."""
    other_address: Address | None


@dataclass(slots=True)
class _Socket:
    endpoint: DatagramSocket
    agent: StunAgent
    observations: dict[Address, Observation] = field(default_factory=dict)
    failures: dict[Address, str] = field(default_factory=dict)
    change_both: bool | None = None
    change_port: bool | None = None
    filtering_done: bool = False

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.endpoint.local_address[0]


@dataclass(frozen=True, slots=True)
class SocketReport:
    local: Address
    observations: tuple[Observation, ...]
    failures: tuple[tuple[Address, str], ...]
    mapping: Verdict
    filtering: Verdict


@dataclass(frozen=True, slots=True)
class NatReport:
    nat_type: str
    mapping: Verdict
    filtering: Verdict
    public: tuple[PublicAddress, ...]
    sockets: tuple[SocketReport, ...]
    servers: tuple[str, ...]
    serving: bool
    answered: int
    refused: int
    last_round: float | None
    """Monotonic time the last round finished; None before the first."""


class StunService:
    """``async with StunService(host, config):`` hooks the sockets and runs
    rounds until it exits (and then unhooks them)."""

    def __init__(self, endpoints: EndpointSource, config: StunServiceConfig | None = None, *,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or StunServiceConfig()
        self._source = endpoints
        self._rng = rng or random.Random()
        self._clock = clock
        self._sockets: dict[int, _Socket] = {}
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._sup: Supervisor | None = None
        self.last_round: float | None = None

    async def __aenter__(self) -> StunService:
        self._install_hooks()
        sup = self._sup = await Supervisor("STUN", log).__aenter__()
        # Both loops run until cancelled; a bug in one restarts it after back-off.
        sup.spawn(self._timer_loop, "STUN timer", restart=RestartPolicy())
        if self.config.servers:
            sup.spawn(self._refresh_loop, "STUN refresh", restart=RestartPolicy())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        sup, self._sup = self._sup, None
        for sock in self._sockets.values():
            sock.endpoint.set_datagram_hook(None)
        if sup is not None:
            await sup.aclose()

    # -- rounds --------------------------------------------------------------------

    async def refresh(self) -> None:
        """Run one round now (after any running one) and wait for its end:
        the configured servers, then (the first time) the filtering tests
        and the mapping test towards a server's other IP.  It takes about
        ``retransmit.timeout`` more for each phase that meets silence, which
        a filtering test on a filtering NAT always does."""
        async with self._round_lock:
            self._install_hooks()
            targets = await self._resolve()
            for sock in self._sockets.values():
                family = socket.AF_INET6 if sock.is_ipv6 else socket.AF_INET
                for server in targets.get(family, []):
                    self._begin(sock, server)
            await self._settle()
            if self.config.filtering_tests and self._start_filtering_tests():
                await self._settle()
            if self._start_mapping_tests():
                await self._settle()
            self.last_round = self._clock()

    async def _refresh_loop(self) -> None:
        while True:
            # One failed round (a resolver error, a bug) costs that round only.
            await run_supervised(self.refresh(), "STUN round", log)
            await asyncio.sleep(self.config.refresh_interval)

    async def _resolve(self) -> dict[int, list[Address]]:
        loop = asyncio.get_running_loop()
        out: dict[int, list[Address]] = {}
        for text in self.config.servers:
            host, port = parse_stun_server(text)
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.info("cannot resolve STUN server %s: %s", text, exc)
                continue
            seen: set[int] = set()
            for family, _, _, _, sockaddr in infos:
                if family in (socket.AF_INET, socket.AF_INET6) and family not in seen:
                    seen.add(family)
                    out.setdefault(family, []).append(
                        normalize_address((str(sockaddr[0]), int(sockaddr[1]))))
        return out

    def _other_server(self, sock: _Socket) -> tuple[Address, Address] | None:
        """The first (server, other address) pair where the server has a
        second IP (RFC 5780 OTHER-ADDRESS)."""
        for obs in sock.observations.values():
            other = obs.other_address
            if other is not None and other[0] != obs.server[0]:
                return obs.server, other
        return None

    def _start_filtering_tests(self) -> bool:
        """RFC 5780 section 4.4 on sockets not yet measured: ask the server
        to answer from its other IP and port, then from its other port.

        Only once per socket, before any request goes to the other IP: a
        flow we opened there would let the answers through an
        address-dependent filter and fake endpoint-independent filtering."""
        started = False
        for sock in self._sockets.values():
            pair = self._other_server(sock)
            if sock.filtering_done or pair is None:
                continue
            server, _ = pair
            sock.filtering_done = True
            self._begin(sock, server, change_ip=True, change_port=True)
            self._begin(sock, server, change_port=True)
            started = True
        return started

    def _start_mapping_tests(self) -> bool:
        """RFC 5780 section 4.3: a plain request to the other IP (at the
        primary port) shows whether the mapping depends on the destination
        IP.  Not to the other port as well: the filtering test's blocked
        answer from there leaves a conntrack entry on Linux NATs that makes
        them pick a new port for that destination, faking a dependent
        mapping."""
        started = False
        for sock in self._sockets.values():
            pair = self._other_server(sock)
            if pair is not None:
                server, other = pair
                self._begin(sock, (other[0], server[1]))
                started = True
        return started

    def _begin(self, sock: _Socket, server: Address, **change: bool) -> None:
        try:
            actions = sock.agent.begin(server, self._clock(), **change)
        except ValueError as exc:  # too many in flight: this round skips it
            log.debug("STUN to %s skipped: %s", server, exc)
            return
        self._carry_out(sock, actions)
        self._wake.set()

    async def _settle(self) -> None:
        limit = self.config.agent.retransmit.timeout + 1.0
        try:
            async with asyncio.timeout(limit):
                while any(sock.agent.in_flight for sock in self._sockets.values()):
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            log.debug("STUN round ended with transactions still open")

    # -- sockets and datagrams --------------------------------------------------------

    def _install_hooks(self) -> None:
        """Hook endpoints made since the last call; forget closed ones."""
        current = {id(endpoint): endpoint for endpoint in self._source.endpoints()}
        for key, known in list(self._sockets.items()):
            if current.get(key) is not known.endpoint:
                del self._sockets[key]
        agent_config = replace(self.config.agent, serve=self.config.serve)
        for key, endpoint in current.items():
            if key in self._sockets or not isinstance(endpoint, DatagramSocket):
                continue
            sock = _Socket(endpoint, StunAgent(self._rng, agent_config))
            self._sockets[key] = sock
            endpoint.set_datagram_hook(functools.partial(self._on_datagram, sock))

    def _on_datagram(self, sock: _Socket, data: bytes, addr: tuple[str, int]) -> bool:
        if not is_stun(data):
            return False  # hole-punch noise and junk: nothing for us
        self._carry_out(sock, sock.agent.on_datagram(data, addr, self._clock()))
        return True

    async def _timer_loop(self) -> None:
        while True:
            deadlines = [d for sock in self._sockets.values()
                         if (d := sock.agent.next_deadline()) is not None]
            self._wake.clear()
            delay = max(0.0, min(deadlines) - self._clock()) if deadlines else None
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            now = self._clock()
            for sock in list(self._sockets.values()):
                self._carry_out(sock, sock.agent.on_timer(now))

    def _carry_out(self, sock: _Socket, actions: list[BindingAction]) -> None:
        for action in actions:
            if isinstance(action, SendDatagram):
                try:
                    sock.endpoint.sendto(action.data, action.addr)
                except (TransportError, OSError) as exc:
                    log.debug("STUN datagram to %s not sent: %s", action.addr, exc)
                continue
            self._progress.set()
            if isinstance(action, BindingSucceeded):
                self._record(sock, action)
            elif isinstance(action, BindingTimedOut):
                if action.change_ip or action.change_port:
                    self._set_probe(sock, action.change_ip, False)
                else:
                    sock.observations.pop(action.server, None)
                    sock.failures[action.server] = (
                        f"no answer to {action.transmissions} requests")
            elif isinstance(action, BindingFailed):
                sock.observations.pop(action.server, None)
                sock.failures[action.server] = f"error {action.code} {action.reason}".strip()

    def _record(self, sock: _Socket, done: BindingSucceeded) -> None:
        if done.change_ip or done.change_port:
            moved_ip = done.source[0] != done.server[0]
            moved_port = done.source[1] != done.server[1]
            # An answer from the address we asked is a server that ignored
            # the change request: it proves nothing about filtering.
            honoured = moved_ip and moved_port if done.change_ip else moved_port and not moved_ip
            self._set_probe(sock, done.change_ip, True if honoured else None)
            return
        response = done.response
        sock.failures.pop(done.server, None)
        sock.observations[done.server] = Observation(
            done.server, response.mapped, response.from_xor, done.rtt, self._clock(),
            response.other_address)
        log.info("STUN %s sees %s as %s", done.server, sock.endpoint.local_address,
                 response.mapped)

    @staticmethod
    def _set_probe(sock: _Socket, change_ip: bool, value: bool | None) -> None:
        if change_ip:
            sock.change_both = value
        else:
            sock.change_port = value

    # -- the report --------------------------------------------------------------------

    def report(self, local_ips: Sequence[str] = (),
               identify: Sequence[tuple[Address, int]] = ()) -> NatReport:
        """What the rounds found; ``identify`` adds what peers observed."""
        sockets: list[SocketReport] = []
        stun_pairs: list[tuple[Address, Address]] = []
        for sock in self._sockets.values():
            observations = tuple(sock.observations.values())
            stun_pairs += [(obs.server, obs.mapped) for obs in observations]
            mapping = classify_mapping(
                [MappingObservation(obs.server, obs.mapped) for obs in observations],
                sock.endpoint.local_address, local_ips)
            filtering = classify_filtering(FilteringProbe(sock.change_both, sock.change_port))
            sockets.append(SocketReport(sock.endpoint.local_address, observations,
                                        tuple(sock.failures.items()), mapping, filtering))
        # The verdict of the socket that learnt most, IPv4 first on a tie.
        main = max(sockets, key=lambda s: (len(s.observations), ":" not in s.local[0]),
                   default=None)
        unknown = Verdict(Behaviour.UNKNOWN, "no socket")
        mapping = main.mapping if main else unknown
        filtering = main.filtering if main else unknown
        agents = [sock.agent for sock in self._sockets.values()]
        return NatReport(
            nat_type(mapping.behaviour, filtering.behaviour), mapping, filtering,
            tuple(public_addresses(stun_pairs, identify)), tuple(sockets),
            self.config.servers, self.config.serve,
            sum(a.answered for a in agents), sum(a.refused for a in agents), self.last_round)
