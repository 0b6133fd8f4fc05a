"""Birthday punching between real hosts on loopback: A and C are connected
only through relay R; C (dialled through the relay) runs DCUtR's
initiator, whose birthday hook speaks ``/ovl/birthday/1.0.0`` first.  The
NAT kinds are injected (loopback has no NAT): the hard side's sockets
keep their ports, so the predicted range holds the winner and the first
probes find it; the hard side dials from the winning socket, and both
mark the direct connection punched.  Both symmetric stays relayed and
says why; two cones leave the upgrade to DCUtR; an endpoint that is not
one to send to is refused before a single probe."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from overlay.host import Host
from overlay.host.transport_types import Connection
from overlay.identity import Ed25519PrivateKey
from overlay.nat.birthday_core import BirthdayConfig
from overlay.nat.birthday_messages import NatKind
from overlay.nat.birthday_service import BirthdayService
from overlay.nat.dcutr_core import DcutrConfig
from overlay.nat.dcutr_service import DcutrService, DcutrServiceConfig
from overlay.relay.client import RelayClient
from overlay.relay.server import RelayServer
from overlay.relay.server_core import RelayLimits
from tests.waiting import wait_until

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
FAST = BirthdayConfig(allow_private=True, socket_rate=500.0, probe_rate=500.0, burst=64,
                      max_probes=1024, grace=1.0, plain_dial=False)
"""Without the hard side's plain dial, which on loopback (no NAT) always
gets through and would leave the spray untested."""


@dataclass
class Pair:
    a: Host
    c: Host
    relay: Host
    dcutr_a: DcutrService
    dcutr_c: DcutrService
    bday_a: BirthdayService
    bday_c: BirthdayService
    stack: AsyncExitStack

    def circuit_addr(self) -> str:
        return (f"{self.relay.listen_addrs()[0]}/p2p/{self.relay.peer_id}"
                f"/p2p-circuit/p2p/{self.c.peer_id}")


def _own_endpoint(host: Host) -> Callable[[], Iterable[tuple[str, int]]]:
    def public() -> list[tuple[str, int]]:
        ip, port = host.endpoints()[0].local_address[:2]
        return [(str(ip), int(port))]
    return public


@asynccontextmanager
async def _pair(kind_a: NatKind, kind_c: NatKind,
                public_c: Callable[[Host], Callable[[], Iterable[tuple[str, int]]]] = _own_endpoint,
                config_a: BirthdayConfig = FAST,
                config_c: BirthdayConfig = FAST) -> AsyncIterator[Pair]:
    async with AsyncExitStack() as stack:
        relay_key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(relay_key))
        await relay.listen([LOOPBACK])
        await stack.enter_async_context(RelayServer(relay, relay_key, RelayLimits()))
        hosts: list[Host] = []
        dcutrs: list[DcutrService] = []
        bdays: list[BirthdayService] = []
        for seed, kind in enumerate((kind_a, kind_c)):
            host, dcutr, bday = await _node(stack, kind, seed, config_a if seed == 0 else config_c,
                                            public_c if seed == 1 else _own_endpoint)
            hosts.append(host)
            dcutrs.append(dcutr)
            bdays.append(bday)
        a, c = hosts
        await _reserve(stack, c, relay)
        yield Pair(a, c, relay, dcutrs[0], dcutrs[1], bdays[0], bdays[1], stack)


async def _node(stack: AsyncExitStack, kind: NatKind, seed: int, config: BirthdayConfig,
                public: Callable[[Host], Callable[[], Iterable[tuple[str, int]]]],
                ) -> tuple[Host, DcutrService, BirthdayService]:
    """A host with DCUtR and birthday punching, its NAT kind injected."""
    kind_of: Callable[[], NatKind] = lambda: kind  # noqa: E731
    host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
    await host.listen([LOOPBACK])
    # No early dial: on loopback it would reach a hard side whatever NAT
    # kind it was given; these tests are about birthday's own decisions.
    dcutr_config = DcutrServiceConfig(core=DcutrConfig(allow_private=True, early_dial=False),
                                      unilateral=False, relayed_grace=30.0, idle_check=0.05)
    dcutr = await stack.enter_async_context(
        DcutrService(host, dcutr_config, rng=random.Random(seed)))
    bday = await stack.enter_async_context(BirthdayService(
        host, config, nat_kind=kind_of, context=dcutr.address_context,
        public=public(host), rng=random.Random(100 + seed)))
    dcutr.pre_punch = bday.try_upgrade
    dcutr.handover = bday.outcome_with
    return host, dcutr, bday


async def _reserve(stack: AsyncExitStack, host: Host, relay: Host) -> None:
    client = await stack.enter_async_context(RelayClient(host))
    await host.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}")
    await client.reserve(relay.peer_id)


def _conns(host: Host, peer: object) -> list[Connection]:
    return [x for x in host.connections() if x.remote_peer == peer]


async def test_the_hard_sides_plain_dial_goes_direct_when_the_easy_side_lets_it_in() -> None:
    # Loopback filters nothing, like a full cone or no NAT: the hard side's
    # QUIC dial from its listening socket gets through on its own, one round
    # trip after the HELLOs, and the easy side knocked once on the hard IP
    # (what opens a restricted cone for it).
    plain = dataclasses.replace(FAST, plain_dial=True)
    async with _pair(NatKind.CONE, NatKind.SYMMETRIC, config_c=plain) as pair:
        a, c = pair.a, pair.c
        async with asyncio.timeout(30):
            await a.connect(pair.circuit_addr())
            await wait_until(lambda: bool(pair.bday_a.outcomes and pair.bday_c.outcomes),
                             pair.bday_a.activity, pair.bday_c.activity, timeout=20)
            easy, hard = pair.bday_a.outcomes[-1], pair.bday_c.outcomes[-1]
            assert easy.ok and easy.role == "easy", pair.bday_a.status()
            assert hard.ok and hard.how.startswith("birthday (hard side, dialled directly"), (
                pair.bday_c.status())
            assert pair.bday_a.counters["knocks"] == 1
            direct_a = a.best_connection(c.peer_id)
            assert direct_a is not None and direct_a.path == "direct" and a.is_punched(direct_a)
            # From C's listening socket, not from a winning probe socket.
            assert direct_a.remote_address is not None
            assert direct_a.remote_address[1] == c.endpoints()[0].local_address[1]
            assert pair.bday_c.counters["endpoints_released"] == 0
            assert c.is_punched(c.best_connection(a.peer_id))  # type: ignore[arg-type]


async def test_symmetric_against_cone_goes_direct_from_the_winning_socket() -> None:
    async with _pair(NatKind.CONE, NatKind.SYMMETRIC) as pair:
        a, c = pair.a, pair.c
        async with asyncio.timeout(30):
            relayed = await a.connect(pair.circuit_addr())
            assert relayed.path == "relayed"
            await wait_until(lambda: bool(pair.bday_a.outcomes and pair.bday_c.outcomes),
                             pair.bday_a.activity, pair.bday_c.activity, timeout=20)
            easy, hard = pair.bday_a.outcomes[-1], pair.bday_c.outcomes[-1]
            assert easy.ok and easy.role == "easy", pair.bday_a.status()
            assert hard.ok and hard.role == "hard", pair.bday_c.status()
            direct_a = a.best_connection(c.peer_id)
            direct_c = c.best_connection(a.peer_id)
            assert direct_a is not None and direct_a.path == "direct" and a.is_punched(direct_a)
            assert direct_c is not None and direct_c.path == "direct" and c.is_punched(direct_c)
            # The hard side dialled from its winning socket (not its listening one).
            assert direct_c.is_initiator and not direct_a.is_initiator
            listen_port = c.endpoints()[0].local_address[1]
            assert direct_a.remote_address is not None
            assert direct_a.remote_address[1] != listen_port
            assert direct_a.remote_address[1] == hard.port == easy.port
            # Kept ports: the predicted range held the winner, so the
            # spray stopped early (how early depends on the handshake's speed).
            assert easy.packets < FAST.max_probes, pair.bday_a.status()
            assert pair.bday_c.counters["sockets_opened"] == FAST.max_sockets
            assert (await a.ping_service.ping(c.peer_id)).path == "direct"
            await wait_until(lambda: bool(pair.dcutr_c.outcomes), pair.dcutr_c.activity,
                             timeout=10)
            assert pair.dcutr_c.outcomes[-1].how.startswith("birthday (hard side")
            assert pair.dcutr_c.counters["birthday"] == 1
            # A's DCUtR (the responder, stopped before SYNC) says who took
            # over and how it ended, not a failure of its own.
            await wait_until(lambda: bool(pair.dcutr_a.outcomes), pair.dcutr_a.activity,
                             timeout=10)
            handed = pair.dcutr_a.outcomes[-1]
            assert handed.ok and handed.how.startswith("birthday took over: birthday (easy side")
            assert pair.dcutr_a.counters["failed"] == 0
            # The winning socket's endpoint lives with its connection.
            winner = [e for e in c.endpoints() if e.local_address[1] == hard.port]
            assert len(winner) == 1
            direct_c.close(0, "test done")
            await direct_c.wait_closed()
            await wait_until(lambda: pair.bday_c.counters["endpoints_released"] == 1,
                             pair.bday_c.activity, timeout=10)
            assert not [e for e in c.endpoints() if e.local_address[1] == hard.port]


async def test_the_dialling_side_can_be_the_hard_one() -> None:
    async with _pair(NatKind.SYMMETRIC, NatKind.CONE) as pair:
        a, c = pair.a, pair.c
        async with asyncio.timeout(30):
            await a.connect(pair.circuit_addr())
            await wait_until(lambda: bool(pair.bday_a.outcomes and pair.bday_c.outcomes),
                             pair.bday_a.activity, pair.bday_c.activity, timeout=20)
            hard, easy = pair.bday_a.outcomes[-1], pair.bday_c.outcomes[-1]
            assert hard.ok and hard.role == "hard" and easy.ok and easy.role == "easy"
            direct_a = a.best_connection(c.peer_id)
            assert direct_a is not None and direct_a.path == "direct" and a.is_punched(direct_a)
            assert direct_a.is_initiator  # A, the hard side, dialled from its winner
            await wait_until(lambda: bool(pair.dcutr_c.outcomes), pair.dcutr_c.activity,
                             timeout=10)
            assert pair.dcutr_c.outcomes[-1].how.startswith("birthday (easy side")


async def test_both_symmetric_stays_relayed_and_says_why() -> None:
    async with _pair(NatKind.SYMMETRIC, NatKind.SYMMETRIC) as pair:
        async with asyncio.timeout(30):
            relayed = await pair.a.connect(pair.circuit_addr())
            await wait_until(lambda: bool(pair.dcutr_c.outcomes), pair.dcutr_c.activity,
                             timeout=20)
            done = pair.dcutr_c.outcomes[-1]
            assert not done.ok and "both sides are behind symmetric NATs" in done.how
            assert pair.bday_a.counters["probes_sent"] == 0
            assert pair.bday_c.counters["sockets_opened"] == 0
            assert not relayed.is_closed
            best = pair.a.best_connection(pair.c.peer_id)
            assert best is not None and best.path == "relayed"
            await wait_until(lambda: bool(pair.dcutr_a.outcomes), pair.dcutr_a.activity,
                             timeout=10)
            handed = pair.dcutr_a.outcomes[-1]
            assert not handed.ok and handed.how.startswith("birthday took over: ")
            assert "both sides are behind symmetric NATs" in handed.how


async def test_two_cones_leave_the_upgrade_to_dcutr() -> None:
    async with _pair(NatKind.CONE, NatKind.CONE) as pair:
        async with asyncio.timeout(30):
            await pair.a.connect(pair.circuit_addr())
            await wait_until(lambda: bool(pair.dcutr_c.outcomes), pair.dcutr_c.activity,
                             timeout=20)
            assert pair.dcutr_c.outcomes[-1].how == "punched"
            assert pair.bday_c.counters["not_needed"] == 1
            assert pair.bday_a.counters["not_needed"] == 1
            assert pair.bday_a.counters["probes_sent"] == 0


def _elsewhere(host: Host) -> Callable[[], Iterable[tuple[str, int]]]:
    return lambda: [("10.77.0.1", 4001)]  # a private address of another network


async def test_a_hard_side_naming_a_third_party_gets_no_probe() -> None:
    async with _pair(NatKind.CONE, NatKind.SYMMETRIC, public_c=_elsewhere) as pair:
        async with asyncio.timeout(30):
            relayed = await pair.a.connect(pair.circuit_addr())
            await wait_until(lambda: bool(pair.bday_a.outcomes and pair.dcutr_c.outcomes),
                             pair.bday_a.activity, pair.dcutr_c.activity, timeout=20)
            refused = pair.bday_a.outcomes[-1]
            assert not refused.ok and "not one to send to" in refused.how, refused
            assert "private address of another network" in refused.how
            assert pair.bday_a.counters["probes_sent"] == 0
            # The hard side may have begun opening sockets (their packets go
            # to A's own endpoint only) and stops on A's refusal.
            await wait_until(lambda: bool(pair.bday_c.outcomes), pair.bday_c.activity,
                             timeout=10)
            hard = pair.bday_c.outcomes[-1]
            assert not hard.ok and ("refused" in hard.how or "stopped" in hard.how), hard
            assert not pair.dcutr_c.outcomes[-1].ok
            assert not relayed.is_closed


async def test_sprays_towards_one_ip_are_capped_whichever_peer_asks() -> None:
    """A allows one spray per IP per window: a second symmetric peer on the
    same IP (a fresh peer ID costs nothing) gets a refusal, not probes."""
    once = BirthdayConfig(allow_private=True, socket_rate=500.0, probe_rate=500.0, burst=64,
                          max_probes=1024, grace=1.0, sprays_per_ip=1, plain_dial=False)
    async with _pair(NatKind.CONE, NatKind.SYMMETRIC, config_a=once) as pair:
        async with asyncio.timeout(30):
            await pair.a.connect(pair.circuit_addr())
            await wait_until(lambda: bool(pair.bday_a.outcomes), pair.bday_a.activity,
                             timeout=20)
            assert pair.bday_a.outcomes[-1].ok
            probes = pair.bday_a.counters["probes_sent"]
            d, dcutr_d, _ = await _node(pair.stack, NatKind.SYMMETRIC, 7, FAST, _own_endpoint)
            await _reserve(pair.stack, d, pair.relay)
            await pair.a.connect(f"{pair.relay.listen_addrs()[0]}/p2p/{pair.relay.peer_id}"
                                 f"/p2p-circuit/p2p/{d.peer_id}")
            await wait_until(lambda: len(pair.bday_a.outcomes) == 2, pair.bday_a.activity,
                             timeout=20)
            refused = pair.bday_a.outcomes[-1]
            assert not refused.ok and "sprayed 1 times lately" in refused.how, refused
            assert pair.bday_a.counters["probes_sent"] == probes  # not one more
            await wait_until(lambda: bool(dcutr_d.outcomes), dcutr_d.activity, timeout=20)
            assert not dcutr_d.outcomes[-1].ok


async def test_a_peer_without_birthday_is_left_to_dcutr() -> None:
    # C (symmetric, dialled through the relay) opens the birthday stream
    # lazily beside DCUtR's CONNECT; A does not speak it, so the refusal
    # comes back as "not for this peer" and DCUtR's SYNC goes ahead.
    async with AsyncExitStack() as stack:
        relay_key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(relay_key))
        await relay.listen([LOOPBACK])
        await stack.enter_async_context(RelayServer(relay, relay_key, RelayLimits()))
        a = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        await a.listen([LOOPBACK])
        dcutr_config = DcutrServiceConfig(core=DcutrConfig(allow_private=True), unilateral=False)
        await stack.enter_async_context(DcutrService(a, dcutr_config, rng=random.Random(7)))
        c, dcutr_c, bday_c = await _node(stack, NatKind.SYMMETRIC, 1, FAST, _own_endpoint)
        await _reserve(stack, c, relay)
        async with asyncio.timeout(30):
            relayed = await a.connect(f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}"
                                      f"/p2p-circuit/p2p/{c.peer_id}")
            assert relayed.path == "relayed"
            await wait_until(lambda: bool(dcutr_c.outcomes), dcutr_c.activity, timeout=20)
            done = dcutr_c.outcomes[-1]
            assert done.ok and done.how == "punched" and done.attempts == 1, dcutr_c.status()
            assert bday_c.counters["sessions"] == 0 and not bday_c.outcomes, bday_c.status()
            assert bday_c.counters["probes_sent"] == bday_c.counters["sockets_opened"] == 0
