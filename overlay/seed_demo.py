"""`overlay demo`: the seed network, end to end, in one process.

One introduction node and ten peers start on 127.0.0.1, each with its own
UDP socket and key.  The peers bootstrap their DHT through the
introduction node.  Two peers register a name each; every peer resolves
both names over the DHT (no cache) and checks that it got the right peer ID
and addresses, and that the record gives back the owner's virtual IPs as
``overlay daemon --tun`` would answer them (the vIPv6 derived from the
owner's peer ID; the vIPv4 from the resolver's own table; no TUN device is
opened); then it connects straight to the named peer and exchanges a
message on a stream.  The report is a table with timings; the demo passes
only if every step worked, within the overall timeout.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import TextIO

from multiaddr import Multiaddr

from overlay import AGENT_VERSION
from overlay.errors import OverlayError
from overlay.host.config import HostConfig
from overlay.host.host import Host
from overlay.host.stream import NegotiatedStream
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.lookup import LookupConfig
from overlay.kad.records import default_registry
from overlay.kad.service import KadService
from overlay.kad.service_config import KadServiceConfig
from overlay.naming.config import NamingConfig
from overlay.naming.kad_client import KadNameClient, register_name_namespace
from overlay.naming.resolver import ResolverConfig
from overlay.naming.service import NameService, NameServiceConfig, Targets
from overlay.vip import vip6_of
from overlay.vip.names import record_vips
from overlay.vip.router import VipRouter

__all__ = ["SeedReport", "NameCheck", "seed_demo_report", "format_seed_report", "run_seed_demo"]

_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
HELLO_PROTOCOL = "/ovl/demo/hello/1.0.0"
_MAX_MESSAGE = 1024
DEMO_NAMES = ("alice.ovl", "bob.ovl")
_OWN = "(own name)"


@dataclass(frozen=True, slots=True)
class DemoNode:
    label: str
    peer_id: str
    addr: str


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    owner: str
    """Label of the registering peer."""
    ms: float
    pow_ms: float
    stored: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NameCheck:
    """What peer ``src`` got for ``name`` and whether it could talk to it."""

    src: str
    name: str
    resolve_ms: float | None
    supporters: int
    peer_id_ok: bool
    addrs_ok: bool
    stream_ms: float | None
    """Connect straight to the named peer, send and receive one message."""
    reply: str | None
    error: str | None
    vip6: str | None = None
    """The vIPv6 the name gives back (the DNS front's AAAA with --tun)."""
    vip6_ok: bool = False
    """It is the owner's: derived from the owner's peer ID."""
    vip4: str | None = None
    """The vIPv4 the resolving peer's table holds for the owner (its A
    answer with --tun; 100.64.0.1 for its own name)."""

    @property
    def ok(self) -> bool:
        return (self.error is None and self.peer_id_ok and self.addrs_ok and self.vip6_ok
                and self.stream_ms is not None)


@dataclass(frozen=True, slots=True)
class SeedReport:
    nodes: tuple[DemoNode, ...]
    registrations: tuple[Registration, ...]
    checks: tuple[NameCheck, ...]
    startup_ms: float
    total_ms: float
    pow_bits: int
    error: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return (self.error is None and len(self.checks) > 0 and all(c.ok for c in self.checks)
                and all(r.error is None for r in self.registrations))


@dataclass
class _Peer:
    label: str
    host: Host
    kad: KadService
    names: NameService
    router: VipRouter
    """The address table ``--tun`` would use; nothing is routed here."""

    @property
    def full_addr(self) -> str:
        return f"{self.host.listen_addrs()[0]}/p2p/{self.host.peer_id}"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _start_peer(stack: AsyncExitStack, label: str, naming: NamingConfig,
                      bootstrap: str | None) -> _Peer:
    key = Ed25519PrivateKey.generate()
    host = await stack.enter_async_context(Host(key, HostConfig()))
    await host.listen([_LISTEN])
    registry = default_registry()
    register_name_namespace(registry, naming)
    kad_config = KadServiceConfig(request_timeout=5.0, lookup_timeout=20.0,
                                  lookup=LookupConfig(peer_timeout=2.0))
    kad = await stack.enter_async_context(KadService(host, kad_config, registry=registry))
    if bootstrap is not None:
        await kad.bootstrap([bootstrap])
    config = NameServiceConfig(naming=naming, resolver=ResolverConfig(quorum=3, timeout=15.0))
    names = await stack.enter_async_context(NameService(
        key, KadNameClient(kad), None, config,
        self_addrs=lambda: tuple(a.to_bytes() for a in host.listen_addrs())))

    async def hello(stream: NegotiatedStream) -> None:
        message = await stream.read(_MAX_MESSAGE)
        stream.write(f"{label} got {message.decode(errors='replace')!r}".encode())
        await stream.drain()
        await stream.close()

    host.set_stream_handler(HELLO_PROTOCOL, hello)
    return _Peer(label, host, kad, names, VipRouter(host.peer_id))


async def _check(src: _Peer, name: str, owner: _Peer) -> NameCheck:
    resolve_ms: float | None = None
    supporters = 0
    peer_ok = addrs_ok = False
    try:
        started = time.perf_counter()
        found = await src.names.resolve(name, use_cache=False)
        resolve_ms = _ms(time.perf_counter() - started)
        supporters = found.supporters
        targets = found.record.peers
        peer_ok = len(targets) == 1 and targets[0].peer_id == owner.host.peer_id.to_bytes()
        expected = {a.to_bytes() for a in owner.host.listen_addrs()}
        addrs_ok = peer_ok and set(targets[0].addrs) == expected
        if not (peer_ok and addrs_ok):
            return NameCheck(src.label, name, resolve_ms, supporters, peer_ok, addrs_ok,
                             None, None, "wrong target in the record")
        # The daemon's own path from a record to its vIPs, checked against
        # the address derived from the owner's peer ID.
        vips = record_vips(src.router, found.record, time.monotonic())
        vip6 = None if vips is None else str(vips[2])
        vip4 = None if vips is None or vips[1] is None else str(vips[1])
        vip6_ok = vip6 == str(vip6_of(owner.host.peer_id))
        if not vip6_ok:
            return NameCheck(src.label, name, resolve_ms, supporters, True, True, None, None,
                             f"the name gives back vIPv6 {vip6}, not its owner's",
                             vip6=vip6, vip4=vip4)
        if src is owner:
            # A node does not dial itself; its own name resolving right is the check.
            return NameCheck(src.label, name, resolve_ms, supporters, True, True, 0.0,
                             _OWN, None, vip6=vip6, vip6_ok=True, vip4=vip4)
        target = PeerId.from_bytes(targets[0].peer_id)
        started = time.perf_counter()
        await src.host.connect(f"{Multiaddr(targets[0].addrs[0])}/p2p/{target}")
        stream = await src.host.new_stream(target, [HELLO_PROTOCOL])
        stream.write(f"hello {name} from {src.label}".encode())
        stream.write_eof()
        await stream.drain()
        reply = await stream.read(_MAX_MESSAGE)
        stream_ms = _ms(time.perf_counter() - started)
        return NameCheck(src.label, name, resolve_ms, supporters, True, True, stream_ms,
                         reply.decode(errors="replace"), None, vip6=vip6, vip6_ok=True,
                         vip4=vip4)
    except (OverlayError, TimeoutError, OSError) as exc:
        return NameCheck(src.label, name, resolve_ms, supporters, peer_ok, addrs_ok, None, None,
                         _error(exc))


async def seed_demo_report(peer_count: int = 10, timeout: float = 120.0,
                           pow_bits: int = 16) -> SeedReport:
    """Run the demo; never raises for network trouble (it is reported)."""
    if not 2 <= peer_count <= 32:
        raise ValueError("peer_count must be between 2 and 32")
    naming = NamingConfig(pow_bits=pow_bits)
    started = time.perf_counter()
    nodes: list[DemoNode] = []
    registrations: list[Registration] = []
    checks: list[NameCheck] = []
    startup_ms = 0.0
    async with AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(timeout):
                intro = await _start_peer(stack, "intro", naming, None)
                peers = [await _start_peer(stack, f"p{i:02d}", naming, intro.full_addr)
                         for i in range(1, peer_count + 1)]
                startup_ms = _ms(time.perf_counter() - started)
                for node in [intro, *peers]:
                    nodes.append(DemoNode(node.label, str(node.host.peer_id),
                                          str(node.host.listen_addrs()[0])))
                owners = {DEMO_NAMES[0]: peers[0], DEMO_NAMES[1]: peers[len(peers) // 2]}

                async def register(name: str, owner: _Peer) -> None:
                    t0 = time.perf_counter()
                    try:
                        result = await owner.names.register(name, Targets(
                            self_peer=True, txt=(f"registered by {owner.label}",)))
                    except (OverlayError, TimeoutError, OSError) as exc:
                        registrations.append(Registration(name, owner.label, 0.0, 0.0, 0,
                                                          _error(exc)))
                        return
                    registrations.append(Registration(
                        name, owner.label, _ms(time.perf_counter() - t0),
                        _ms(result.pow_seconds), result.stored))

                async with asyncio.TaskGroup() as group:
                    for name, owner in owners.items():
                        group.create_task(register(name, owner))
                registrations.sort(key=lambda r: r.name)

                async def check(src: _Peer, name: str) -> None:
                    checks.append(await _check(src, name, owners[name]))

                # One at a time, so each timing is that operation's alone.
                for src in peers:
                    for name in DEMO_NAMES:
                        await check(src, name)
        except TimeoutError:
            return SeedReport(tuple(nodes), tuple(registrations), tuple(checks), startup_ms,
                              _ms(time.perf_counter() - started), pow_bits,
                              f"the demo did not finish within {timeout:g} s")
        return SeedReport(tuple(nodes), tuple(registrations), tuple(checks), startup_ms,
                          _ms(time.perf_counter() - started), pow_bits)


def format_seed_report(report: SeedReport) -> str:
    peers = max(0, len(report.nodes) - 1)
    lines = [f"overlay demo ({AGENT_VERSION}): 1 introduction node + {peers} peers on "
             "127.0.0.1, QUIC-v1, Kademlia, signed name records", ""]
    lines.append(f"  {'node':6} {'peer id':53} address")
    for node in report.nodes:
        lines.append(f"  {node.label:6} {node.peer_id:53} {node.addr}")
    lines.append(f"\nstarted and bootstrapped in {report.startup_ms:.0f} ms\n")
    for reg in report.registrations:
        if reg.error:
            lines.append(f"register {reg.name} by {reg.owner}: FAILED {reg.error}")
        else:
            lines.append(f"registered {reg.name:10} by {reg.owner} in {reg.ms:7.1f} ms "
                         f"(proof of work, {report.pow_bits} bits: {reg.pow_ms:.1f} ms, "
                         f"stored on {reg.stored} nodes)")
    lines.append("")
    lines.append(f"  {'from':5} {'name':10} {'resolve':>10} {'votes':>5} {'peer id':7} "
                 f"{'addrs':5} {'vip6':5} {'vip4':15} {'stream':>10}  result")
    for c in report.checks:
        resolve = f"{c.resolve_ms:.1f} ms" if c.resolve_ms is not None else "-"
        stream = f"{c.stream_ms:.1f} ms" if c.stream_ms is not None else "-"
        if c.reply == _OWN:
            stream = "own name"
        result = "ok" if c.ok else (c.error or "failed")
        vip6 = "ok" if c.vip6_ok else ("-" if c.vip6 is None else "WRONG")
        lines.append(f"  {c.src:5} {c.name:10} {resolve:>10} {c.supporters:>5} "
                     f"{'ok' if c.peer_id_ok else 'WRONG':7} {'ok' if c.addrs_ok else 'WRONG':5} "
                     f"{vip6:5} {c.vip4 or '-':15} {stream:>10}  {result}")
    lines.append("")
    for name in dict.fromkeys(c.name for c in report.checks):
        given = {c.vip6 for c in report.checks if c.name == name and c.vip6_ok}
        owners = [r.owner for r in report.registrations if r.name == name]
        if len(given) == 1:
            lines.append(f"{name} gives back {owners[0] if owners else 'its owner'}'s vIPv6 "
                         f"{given.pop()} on every peer (from its peer ID; the vIPv4 is each "
                         "peer's own, 100.64.0.0/10)")
    lines.append("")
    times = [c.resolve_ms for c in report.checks if c.resolve_ms is not None]
    streams = [c.stream_ms for c in report.checks if c.stream_ms and c.reply != _OWN]
    if times:
        lines.append(f"resolve over the DHT: median {statistics.median(times):.1f} ms, "
                     f"max {max(times):.1f} ms; direct stream: median "
                     f"{statistics.median(streams) if streams else 0:.1f} ms")
    good = sum(1 for c in report.checks if c.ok)
    verdict = "OK" if report.ok else "FAILED"
    lines.append(f"{verdict}: {good}/{len(report.checks)} resolutions and exchanges succeeded "
                 f"in {report.total_ms:.0f} ms" + (f" ({report.error})" if report.error else ""))
    return "\n".join(lines)


async def run_seed_demo(out: TextIO, *, peers: int = 10, timeout: float = 120.0,
                        as_json: bool = False, pow_bits: int = 16) -> bool:
    report = await seed_demo_report(peers, timeout, pow_bits)
    if as_json:
        doc = asdict(report)
        doc["ok"] = report.ok
        for check, item in zip(report.checks, doc["checks"], strict=True):
            item["ok"] = check.ok
        print(json.dumps(doc, indent=2), file=out, flush=True)
    else:
        print(format_seed_report(report), file=out, flush=True)
    return report.ok
