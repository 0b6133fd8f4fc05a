"""`overlay demo --nat` (root): the seed demo across real NATs.

Built in network namespaces with ``overlay.lab`` and run with real
daemons:

    public switch 203.0.113.0/24
      ├── intro   203.0.113.10   `overlay daemon --introducer` (relay, STUN, DHT)
      ├── intro2  203.0.113.11   a second introducer: STUN on a second IP, so
      │                          a peer can tell a symmetric NAT from a cone
      └── nat1..nat10 203.0.113.101..110 ─[20 ms]─ peer1..peer10  (``PEER_KINDS``)

Every peer runs ``overlay daemon --tun --relay <intro>``: it holds a relay
reservation, learns its NAT kind from the two STUN servers, and gets a
virtual-IP interface.  Then the pairs of ``PAIRS`` are tried, in rounds in
which no peer takes part twice: A connects to B's circuit address (a
relayed connection) and B upgrades it by DCUtR (a unilateral dial, a hole
punch, or birthday probing when one side is symmetric) or says why not.
Each pair then pings over the overlay and sends ICMP echoes to the
other's virtual IPv6 address (real packets through ``ovl0``).  Two peers
register a name each, and every other peer resolves both over the DHT,
checks the owner and its virtual address, and one resolver per name pings
the virtual IPv4 address the name resolved to and fetches a page over HTTP
from a web server in the owner's namespace through it.

Which pairs should go direct follows issue #9's goals (``goal_of``): every
pair of no NAT / full / restricted / port-restricted cone, and a symmetric
NAT against any of those; symmetric against symmetric stays relayed and
must still be reachable.  The demo passes only if every pair met its goal
and every name check worked.  All waits are bounded; the lab is torn down
on every exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.errors import OverlayError
from overlay.identity import PeerId
from overlay.lab.daemons import AUTONAT_LAB_CONFIG, Daemon, spawn_daemon
from overlay.lab.lab import REQUIRED_TOOLS, Lab, LabError
from overlay.lab.matrix import MatrixTopology, build_matrix_topology
from overlay.lab.natkinds import NatKind
from overlay.vip import vip6_of

__all__ = [
    "NAMES", "PAIRS", "PEER_KINDS", "NameCheck", "NatDemoReport", "PairResult", "PeerInfo",
    "format_nat_report", "goal_of", "missing_requirement", "run_nat_demo", "schedule",
]

PEER_KINDS: tuple[NatKind, ...] = (
    NatKind.NONE, NatKind.FULL_CONE, NatKind.RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE,
    NatKind.SYMMETRIC_RANDOM,
    NatKind.NONE, NatKind.FULL_CONE, NatKind.RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE,
    NatKind.SYMMETRIC_SEQUENTIAL,
)
"""peer1..peer10: each kind twice, the symmetric one in both allocations."""
PAIRS: tuple[tuple[int, int], ...] = (
    # (A dials, B is dialled through the relay and runs DCUtR), 1-based.
    (1, 6), (7, 2), (3, 8), (9, 4), (5, 10),          # each kind against itself
    (1, 7), (8, 6), (4, 1), (2, 3), (9, 7), (3, 9),   # the cones and no NAT across
    (6, 5), (2, 10), (5, 8),                           # symmetric against the open kinds
    (4, 5), (10, 9),                                   # symmetric against port-restricted
)
"""One pair per pair of kinds (both symmetric allocations against the
port-restricted cone), each peer in three or four; every kind dials in
some pairs and is dialled (runs DCUtR's initiator side) in others."""
NAMES: tuple[tuple[str, int], ...] = (("alice.ovl", 4), ("bob.ovl", 5))
"""(name, owner): one behind a port-restricted cone, one behind a symmetric NAT."""
WAN_DELAY_MS = 20.0
"""One way, on each NAT's WAN link: 40 ms RTT to the introducer, 80 ms
between two peers."""
INTRO2_IP = "203.0.113.11"
PREFIX = "ovldemo"
_SYMMETRIC = {NatKind.SYMMETRIC_RANDOM, NatKind.SYMMETRIC_SEQUENTIAL}
_SHORT = {NatKind.NONE: "none", NatKind.FULL_CONE: "full cone",
          NatKind.RESTRICTED_CONE: "restricted", NatKind.PORT_RESTRICTED_CONE: "port-restr",
          NatKind.SYMMETRIC_RANDOM: "sym-random", NatKind.SYMMETRIC_SEQUENTIAL: "sym-seq"}
_COMMON_FLAGS = ("--dns", "off", "--no-mdns", "--no-upnp")
START_TIMEOUT = 90.0
"""Twelve Python daemons starting at once on a small shared machine (about
30 s on two busy cores)."""
SETTLE_TIMEOUT = 45.0
"""Until every peer holds a reservation and knows its NAT kind."""
CONNECT_TIMEOUT = 20.0
OUTCOME_TIMEOUT = 30.0
"""From the relayed connection to B's verdict: DCUtR's three failed
attempts take about 17 s, a birthday spray up to about 13 s."""
DIRECT_GRACE = 10.0
"""After B reported success, until A's peers shows the direct path."""
SESSION_GRACE = 3.0
"""After A saw the direct path, until B's session record says how."""
API_TIMEOUT = 15.0
TOOL_TIMEOUT = 20.0
"""One ICMP or HTTP probe run in a namespace."""
HTTP_PORT = 80
"""The owners' web servers, each in its own namespace."""
POLL_INTERVAL = 0.1
"""Pacing between polls of a daemon; what ends a wait is its answer."""
DEFAULT_TIMEOUT = 240.0


# -- the plan (pure) -------------------------------------------------------------

def goal_of(a: NatKind, b: NatKind) -> str:
    """``direct`` or ``relayed``: what issue #9 asks of a pair of kinds."""
    return "relayed" if a in _SYMMETRIC and b in _SYMMETRIC else "direct"


def schedule(pairs: Sequence[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Rounds in which no peer takes part twice (greedy, in order): a peer's
    punches never share its NAT with another of the demo's punches."""
    rounds: list[list[tuple[int, int]]] = []
    busy: list[set[int]] = []
    for pair in pairs:
        for number, used in enumerate(busy):
            if not used & set(pair):
                rounds[number].append(pair)
                used.update(pair)
                break
        else:
            rounds.append([pair])
            busy.append(set(pair))
    return rounds


def missing_requirement() -> str | None:
    """One line naming what this machine lacks for the demo, or None."""
    if os.geteuid() != 0:
        return ("overlay demo --nat needs root (network namespaces, nftables, TUN devices); "
                "run it with sudo, or run `overlay demo` without --nat")
    missing = [f"`{tool}` (package {package})" for tool, package in REQUIRED_TOOLS.items()
               if shutil.which(tool) is None]
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun (the tun kernel module)")
    if missing:
        return "overlay demo --nat needs " + ", ".join(missing)
    return None


# -- the report ------------------------------------------------------------------

@dataclass(slots=True)
class PeerInfo:
    label: str
    kind: str
    public_ip: str
    peer_id: str = ""
    nat_seen: str | None = None
    """The NAT type the peer's STUN client reported."""
    autonat: str | None = None
    """AutoNAT v2's verdict once the pairs start: ``public`` means the
    introducers' dial-backs got in, and the peer advertises its address."""
    circuit: str | None = None


@dataclass(slots=True)
class PairResult:
    a: str
    b: str
    a_kind: str
    b_kind: str
    goal: str
    round: int
    path: str | None = None
    """``direct`` or ``relayed`` once the outcome was known."""
    how: str | None = None
    """B's DCUtR session: unilateral, punched, birthday …, or why it failed."""
    direct_ms: float | None = None
    """From A's relayed connection to A seeing the direct one (polled)."""
    session_ms: float | None = None
    """B's own measure of its session."""
    relayed_rtt_ms: float | None = None
    ping_path: str | None = None
    ping_ms: float | None = None
    vip: str | None = None
    vip_received: int = 0
    vip_sent: int = 0
    vip_rtt_ms: float | None = None
    error: str | None = None
    diagnosis: dict[str, Any] | None = None
    """When an echo went unanswered: each side's connections to the other
    and its vIP counters, taken right after the echoes (the lab and the
    daemons' logs are gone once the demo ends)."""

    @property
    def reachable(self) -> bool:
        return self.ping_ms is not None and self.vip_received > 0

    @property
    def ok(self) -> bool:
        if self.error is not None or not self.reachable:
            return False
        if self.goal == "direct":
            return self.path == "direct"
        return self.path == "relayed" and bool(self.how)


@dataclass(slots=True)
class NameCheck:
    src: str
    name: str
    owner: str
    resolve_ms: float | None = None
    owner_ok: bool = False
    vip6_ok: bool = False
    vip4: str | None = None
    vip_received: int | None = None
    """ICMP echoes answered through the vIPv4 the name resolved to (one
    resolver per name sends them)."""
    fetched: bool | None = None
    """Whether that resolver got the owner's page over HTTP through the vIPv4."""
    fetch_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.owner_ok and self.vip6_ok
                and self.vip_received != 0 and self.fetched is not False)


@dataclass(slots=True)
class NatDemoReport:
    peers: list[PeerInfo] = field(default_factory=list)
    pairs: list[PairResult] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    names: list[NameCheck] = field(default_factory=list)
    rounds: list[list[str]] = field(default_factory=list)
    build_s: float = 0.0
    start_s: float = 0.0
    settle_s: float = 0.0
    total_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and len(self.pairs) == len(PAIRS)
                and all(p.ok for p in self.pairs) and len(self.names) > 0
                and all(n.ok for n in self.names)
                and all(r.get("error") is None for r in self.registrations))

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = self.ok
        for pair, item in zip(self.pairs, doc["pairs"], strict=True):
            item["ok"] = pair.ok
            item["reachable"] = pair.reachable
        for check, item in zip(self.names, doc["names"], strict=True):
            item["ok"] = check.ok
        doc["wan_delay_ms"] = WAN_DELAY_MS
        return doc


# -- talking to the daemons ----------------------------------------------------------

async def _api(daemon: Daemon, op: str, args: Mapping[str, Any] | None = None,
               timeout: float = API_TIMEOUT) -> dict[str, Any]:
    """One API call on the daemon's Unix socket, reachable from the root
    namespace.  Raises ``OverlayError``, ``OSError`` or ``TimeoutError``."""
    async with asyncio.timeout(timeout):
        async with await ApiClient.connect(daemon.api_socket) as client:
            return dict(await client.call(op, dict(args or {})))


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


async def _tool(daemon: Daemon, module: str, *args: str) -> dict[str, Any]:
    """``python -m overlay.lab.<module> ARGS`` in the daemon's namespace;
    its JSON line.  It dies with the namespace if we are interrupted (the
    lab kills whatever runs in it)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", daemon.node.namespace, sys.executable, "-m",
        f"overlay.lab.{module}", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(TOOL_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise LabError(f"{module} {' '.join(args)}: exit {proc.returncode}: "
                       f"{err.decode(errors='replace').strip()[-300:]}")
    return dict(json.loads(out))


async def _icmp(daemon: Daemon, address: str, count: int = 3) -> tuple[int, float | None]:
    """ICMP echoes from the daemon's namespace to ``address``: (answered,
    median RTT in ms)."""
    got = await _tool(daemon, "icmp", address, "--count", str(count), "--wait", "2")
    rtts = [float(r) for r in got["rtts_ms"]]
    return len(rtts), (round(statistics.median(rtts), 1) if rtts else None)


def _sessions_with(status: Mapping[str, Any], peer_id: str) -> list[dict[str, Any]]:
    return [dict(s) for s in status.get("recent", []) if s.get("peer") == peer_id]


def _entry(peers_reply: Mapping[str, Any], peer_id: str) -> dict[str, Any]:
    for entry in peers_reply.get("peers", []):
        if entry.get("peer_id") == peer_id:
            return dict(entry)
    return {}


async def _try_pair(result: PairResult, a: Daemon, b: Daemon, b_circuit: str) -> None:
    """Relayed connection A -> B, B's verdict, then traffic (module doc)."""
    try:
        try:
            # A clean start even if the DHT connected them meanwhile.
            await _api(a, "disconnect", {"peer": b.peer_id})
        except ApiError:
            pass  # "not connected": the usual case
        before = len(_sessions_with(await _api(b, "holepunch_status"), a.peer_id))
        connected = await _api(a, "connect", {"addr": b_circuit}, timeout=CONNECT_TIMEOUT)
        t0 = time.monotonic()
        result.path = str(connected.get("path"))
        deadline = t0 + OUTCOME_TIMEOUT
        session: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            entry = _entry(await _api(a, "peers"), b.peer_id)
            if entry.get("path") == "direct":
                result.path = "direct"
                result.direct_ms = round((time.monotonic() - t0) * 1000, 1)
                break
            sessions = _sessions_with(await _api(b, "holepunch_status"), a.peer_id)
            if len(sessions) > before:
                session = sessions[-1]
                if not session.get("ok"):
                    break
                deadline = min(deadline, time.monotonic() + DIRECT_GRACE)
            await asyncio.sleep(POLL_INTERVAL)
        else:
            result.how = f"no verdict from B within {OUTCOME_TIMEOUT:g} s"
        # A may see the direct connection before B has filed its session:
        # wait a little for B's account of how it went.
        grace = time.monotonic() + SESSION_GRACE
        while session is None:
            sessions = _sessions_with(await _api(b, "holepunch_status"), a.peer_id)
            session = sessions[-1] if len(sessions) > before else None
            if session is not None or time.monotonic() >= grace:
                break
            await asyncio.sleep(POLL_INTERVAL)
        if session is not None:
            result.how = str(session.get("how"))
            result.session_ms = session.get("elapsed_ms")
            result.relayed_rtt_ms = session.get("rtt_ms")
            if session.get("ok") and result.path != "direct":
                result.how = f"B says {result.how}, but A's connection stays {result.path}"
        elif result.how is None:
            result.how = "direct before B reported a session"
        pinged = await _api(a, "ping", {"peer": b.peer_id, "count": 3})
        result.ping_path = str(pinged.get("path"))
        result.ping_ms = pinged.get("avg_ms")
        result.vip = str(vip6_of(PeerId.from_string(b.peer_id)))
        result.vip_sent = 3
        result.vip_received, result.vip_rtt_ms = await _icmp(a, result.vip, 3)
        if result.vip_received < result.vip_sent:
            result.diagnosis = {"a": await _diagnose(a, b), "b": await _diagnose(b, a)}
    except (OverlayError, OSError, TimeoutError, ValueError) as exc:
        result.error = _why(exc)


def _conns_seen(result: PairResult) -> str:
    """`` (connections: A 1, B 2)`` when a diagnosis was taken."""
    if not result.diagnosis:
        return ""
    counts = [len(result.diagnosis.get(side, {}).get("peer", {}).get("connections", []))
              for side in ("a", "b")]
    return f" (connections to each other: A {counts[0]}, B {counts[1]})"


async def _diagnose(daemon: Daemon, other: Daemon) -> dict[str, Any]:
    """What ``daemon`` knows of its paths to ``other``: its ``peers`` entry,
    its vIP counters and path, its birthday sessions with it."""
    out: dict[str, Any] = {}
    try:
        out["peer"] = _entry(await _api(daemon, "peers"), other.peer_id)
        status = await _api(daemon, "vip_status")
        out["vip"] = {key: status.get(key) for key in ("packets", "drops")}
        out["vip"]["path"] = next((p.get("path") for p in status.get("peers", [])
                                  if p.get("peer_id") == other.peer_id), None)
        punch = await _api(daemon, "holepunch_status")
        out["birthday"] = [s for s in (punch.get("birthday") or {}).get("recent", [])
                           if s.get("peer") == other.peer_id]
    except (OverlayError, OSError, TimeoutError) as exc:
        out["error"] = _why(exc)
    out["log"] = [line for line in daemon.proc.stderr_text().splitlines()
                  if other.peer_id in line][-40:]
    return out


async def _settle(peers: Sequence[Daemon], infos: Sequence[PeerInfo]) -> None:
    """Until every peer holds a reservation with a circuit address and its
    STUN client has a verdict (a symmetric NAT must know it is one before
    birthday probing can start); ``LabError`` naming the laggards."""
    deadline = time.monotonic() + SETTLE_TIMEOUT

    async def one(daemon: Daemon, info: PeerInfo) -> bool:
        while True:
            try:
                relay = await _api(daemon, "relay_status")
                nat = await _api(daemon, "nat_status")
            except (OverlayError, OSError, TimeoutError) as exc:
                relay, nat = {}, {"nat_type": f"error {_why(exc)}"}
            info.nat_seen = nat.get("nat_type")
            if relay.get("advertised"):
                info.circuit = str(relay["advertised"][0])
            if info.circuit and info.nat_seen not in (None, "unknown") \
                    and not str(info.nat_seen).startswith("error"):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL * 3)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(d, i)) for d, i in zip(peers, infos, strict=True)]
    late = [f"{info.label} ({info.kind}: circuit {info.circuit}, NAT {info.nat_seen})"
            for task, info in zip(tasks, infos, strict=True) if not task.result()]
    if late:
        raise LabError(f"not ready within {SETTLE_TIMEOUT:g} s: " + "; ".join(late))


async def _register(daemon: Daemon, name: str, owner: str) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        got = await _api(daemon, "name_register", {"name": name}, timeout=120.0)
    except (OverlayError, OSError, TimeoutError) as exc:
        return {"name": name, "owner": owner, "error": _why(exc)}
    return {"name": name, "owner": owner, "ms": round((time.monotonic() - t0) * 1000, 1),
            "pow_ms": got.get("pow_ms"), "stored": got.get("stored"), "error": None}


async def _resolve(check: NameCheck, daemon: Daemon, owner: Daemon, ping: bool,
                   page: str) -> None:
    try:
        t0 = time.monotonic()
        got = await _api(daemon, "name_resolve", {"name": check.name, "no_cache": True})
        check.resolve_ms = round((time.monotonic() - t0) * 1000, 1)
        targets = got.get("record", {}).get("peers", [])
        check.owner_ok = bool(targets) and targets[0].get("peer_id") == owner.peer_id
        check.vip6_ok = got.get("vip6") == str(vip6_of(PeerId.from_string(owner.peer_id)))
        check.vip4 = got.get("vip4")
        if ping and check.vip4:
            check.vip_received, _ = await _icmp(daemon, check.vip4, 3)
            check.fetched = False
            got = await _tool(daemon, "fetch", f"http://{check.vip4}:{HTTP_PORT}/",
                              "--host", check.name, "--timeout", "10")
            check.fetched = got.get("status") == 200 and got.get("body") == page
            check.fetch_ms = got.get("ms")
        elif ping:
            check.vip_received = 0
    except (OverlayError, OSError, TimeoutError, ValueError) as exc:
        check.error = _why(exc)


async def _exercise(report: NatDemoReport, peers: Sequence[Daemon], pages: Mapping[str, str],
                    progress: Callable[[str], None]) -> None:
    t0 = time.monotonic()
    await _settle(peers, report.peers)
    report.settle_s = round(time.monotonic() - t0, 1)
    seen = ", ".join(f"{p.label} {p.nat_seen}" for p in report.peers)
    progress(f"every peer holds a relay reservation and knows its NAT ({seen})")
    labels = [p.label for p in report.peers]
    for info, daemon in zip(report.peers, peers, strict=True):
        try:
            info.autonat = (await _api(daemon, "autonat_status")).get("reachability")
        except (OverlayError, OSError, TimeoutError) as exc:
            info.autonat = _why(exc)
    async with asyncio.TaskGroup() as group:
        # Proof of work takes seconds: it runs while the pairs are tried.
        registering = [group.create_task(_register(peers[owner - 1], name, labels[owner - 1]))
                       for name, owner in NAMES]
        for number, pairs in enumerate(schedule(PAIRS), 1):
            report.rounds.append([f"{labels[a - 1]}>{labels[b - 1]}" for a, b in pairs])
            progress(f"round {number}: " + ", ".join(report.rounds[-1]))
            results = []
            async with asyncio.TaskGroup() as pair_group:
                for a, b in pairs:
                    pa, pb = report.peers[a - 1], report.peers[b - 1]
                    result = PairResult(pa.label, pb.label, pa.kind, pb.kind,
                                        goal_of(PEER_KINDS[a - 1], PEER_KINDS[b - 1]), number)
                    results.append(result)
                    pair_group.create_task(_try_pair(result, peers[a - 1], peers[b - 1],
                                                     str(pb.circuit)))
            report.pairs.extend(results)
            for r in results:
                progress(f"  {r.a} ({r.a_kind}) > {r.b} ({r.b_kind}): {r.path} "
                         f"({r.how}; {_num(r.direct_ms, ' ms')}); vIP {r.vip_received}/"
                         f"{r.vip_sent}" + (f"; ERROR {r.error}" if r.error else "")
                         + ("" if r.ok else " [goal missed]") + _conns_seen(r))
    report.registrations = [task.result() for task in registering]
    for reg in report.registrations:
        progress(f"registered {reg['name']} on {reg['owner']}"
                 + (f": ERROR {reg['error']}" if reg["error"] else f" in {reg['ms']:.0f} ms"))
    checks: list[tuple[NameCheck, Daemon, Daemon, bool]] = []
    for name, owner in NAMES:
        first = True
        for index, daemon in enumerate(peers, 1):
            if index != owner:
                checks.append((NameCheck(labels[index - 1], name, labels[owner - 1]), daemon,
                               peers[owner - 1], first))
                first = False
    async with asyncio.TaskGroup() as group:
        for check, daemon, owner_daemon, ping in checks:
            group.create_task(_resolve(check, daemon, owner_daemon, ping, pages[check.name]))
    report.names = [check for check, *_ in checks]
    good = sum(1 for c in report.names if c.ok)
    progress(f"names resolved and checked: {good}/{len(report.names)}")


# -- running it ------------------------------------------------------------------------

def _peer_flags(kind: NatKind, intro: Daemon, intro2: Daemon, topo: MatrixTopology) -> list[str]:
    flags = [*_COMMON_FLAGS, "--tun", "--relay", intro.addr, "--bootstrap", intro.addr,
             "--bootstrap", intro2.addr,
             "--stun", f"{topo.introducer_ip}:{intro.port}", "--stun", f"{INTRO2_IP}:{intro2.port}"]
    if kind.translates:
        # As a libp2p node does once AutoNAT says private: a DHT client is
        # never dialled by the DHT, so only the demo's pairs punch.
        flags += ["--dht-mode", "client"]
    return flags


def _serve_page(lab: Lab, owner: Daemon, name: str) -> str:
    """A web server in the owner's namespace whose page names the name and
    a fresh token; returns the page.  The lab stops it."""
    page = f"{name} {secrets.token_hex(8)}\n"
    root = lab.workdir / f"www-{name}"
    root.mkdir()
    (root / "index.html").write_text(page)
    server = lab.popen(owner.node, [sys.executable, "-u", "-m", "http.server", str(HTTP_PORT),
                                    "--bind", "0.0.0.0", "--directory", str(root)])
    server.wait_for_line(lambda line: line.startswith("Serving HTTP"), START_TIMEOUT)
    return page


def _build_and_run(lab: Lab, report: NatDemoReport, progress: Callable[[str], None],
                   timeout: float) -> None:
    t0 = time.monotonic()
    topo = build_matrix_topology(lab, PEER_KINDS, wan_delay_ms=WAN_DELAY_MS)
    intro2_node = topo.add_public_host(lab, "intro2", INTRO2_IP)
    for peer in topo.peers:
        # The lab turns IPv6 off; ovl0 needs it for the peers' vIPv6.
        lab.sysctl(peer.client, "net/ipv6/conf/default/disable_ipv6", "0")
    report.peers = [PeerInfo(f"p{peer.index:02d}", _SHORT[peer.kind], peer.public_ip)
                    for peer in topo.peers]
    report.build_s = round(time.monotonic() - t0, 1)
    progress(f"lab built in {report.build_s:.1f} s: 2 introducers on 203.0.113.0/24, "
             f"10 peers behind NATs, {WAN_DELAY_MS:g} ms on each WAN link")
    t1 = time.monotonic()
    intro_flags = (*_COMMON_FLAGS, "--introducer")
    starting = [spawn_daemon(lab, topo.introducer, topo.introducer_ip, *intro_flags,
                             name="intro", config=AUTONAT_LAB_CONFIG),
                spawn_daemon(lab, intro2_node, INTRO2_IP, *intro_flags, name="intro2",
                             config=AUTONAT_LAB_CONFIG)]
    intro, intro2 = (s.ready(START_TIMEOUT) for s in starting)
    starting = [spawn_daemon(lab, peer.client, peer.client_ip,
                             *_peer_flags(peer.kind, intro, intro2, topo),
                             name=f"p{peer.index:02d}", config=AUTONAT_LAB_CONFIG)
                for peer in topo.peers]
    peers = [s.ready(START_TIMEOUT) for s in starting]
    for info, daemon in zip(report.peers, peers, strict=True):
        info.peer_id = daemon.peer_id
    report.start_s = round(time.monotonic() - t1, 1)
    progress(f"12 daemons up in {report.start_s:.1f} s")
    pages = {name: _serve_page(lab, peers[owner - 1], name) for name, owner in NAMES}

    async def bounded() -> None:
        async with asyncio.timeout(timeout - (time.monotonic() - t0)):
            await _exercise(report, peers, pages, progress)

    try:
        asyncio.run(bounded())
    except TimeoutError:
        report.error = f"the demo did not finish within {timeout:g} s"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_nat_demo(out: TextIO, *, as_json: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 progress: Callable[[str], None] | None = None) -> bool:
    """Build the lab, run the demo, tear everything down, print the report;
    True only if every goal was met.  Call ``missing_requirement`` first.
    SIGTERM is turned into KeyboardInterrupt meanwhile, so that it cleans up
    as Ctrl-C does."""
    started = time.monotonic()

    def say(message: str) -> None:
        if progress is not None:
            progress(f"[{time.monotonic() - started:5.1f} s] {message}")

    report = NatDemoReport()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    lab = Lab(prefix=PREFIX)
    try:
        lab.__enter__()
        try:
            _build_and_run(lab, report, say, timeout)
        except (OverlayError, OSError, subprocess.SubprocessError) as exc:
            # LabError (a setup command, a daemon that would not start) is
            # an OverlayError: reported in the table, after the clean-up.
            report.error = _why(exc)
        finally:
            # A second Ctrl-C must not leave namespaces behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            say("stopping the daemons and deleting the lab")
            errors = lab.close()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if errors and report.error is None:
                report.error = "teardown: " + "; ".join(errors)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report.total_s = round(time.monotonic() - started, 1)
    if as_json:
        print(json.dumps(report.to_json(), indent=2), file=out, flush=True)
    else:
        print(format_nat_report(report), file=out, flush=True)
    return report.ok


# -- the table ---------------------------------------------------------------------------

def _num(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def format_nat_report(report: NatDemoReport) -> str:
    lines = [f"overlay demo --nat: 2 introducers on 203.0.113.0/24 and {len(report.peers)} "
             f"peers behind NATs, {WAN_DELAY_MS:g} ms on each WAN link "
             f"({4 * WAN_DELAY_MS:g} ms RTT between peers)", ""]
    lines.append(f"  {'peer':5} {'NAT built':11} {'STUN says':24} {'AutoNAT':8} "
                 f"{'public IP':15} peer id")
    for p in report.peers:
        lines.append(f"  {p.label:5} {p.kind:11} {p.nat_seen or '-':24} {p.autonat or '-':8} "
                     f"{p.public_ip:15} {p.peer_id}")
    lines.append("")
    lines.append(f"  {'A > B':9} {'kinds (A x B)':24} {'goal':7} {'result':8} {'to direct':>9} "
                 f"{'ping':>8} {'vIP ping':>12}  how (B's session) or why not direct")
    for r in report.pairs:
        result = r.path or "-"
        if not r.ok:
            result += "!"
        vip = f"{r.vip_received}/{r.vip_sent} {_num(r.vip_rtt_ms, ' ms')}"
        how = r.error or r.how or "-"
        lines.append(f"  {r.a + '>' + r.b:9} {r.a_kind + ' x ' + r.b_kind:24} {r.goal:7} "
                     f"{result:8} {_num(r.direct_ms, ' ms'):>9} {_num(r.ping_ms, ' ms', 1):>8} "
                     f"{vip:>12}  {how}")
    lines.append("")
    for reg in report.registrations:
        if reg.get("error"):
            lines.append(f"register {reg['name']} on {reg['owner']}: FAILED {reg['error']}")
        else:
            lines.append(f"registered {reg['name']} on {reg['owner']} in {reg['ms']:.0f} ms "
                         f"(proof of work {_num(reg.get('pow_ms'), ' ms')}, stored on "
                         f"{reg.get('stored')} nodes)")
    for name, _ in NAMES:
        checks = [c for c in report.names if c.name == name]
        if not checks:
            continue
        good = [c for c in checks if c.ok]
        times = [c.resolve_ms for c in checks if c.resolve_ms is not None]
        pinged = [c for c in checks if c.vip_received is not None]
        ping_text = "; ".join(f"{c.src} pinged its vIPv4 {c.vip4}: {c.vip_received}/3 and "
                              + ("fetched its page in " + _num(c.fetch_ms, " ms")
                                 if c.fetched else "did NOT fetch its page")
                              for c in pinged)
        lines.append(f"  {name}: resolved right by {len(good)}/{len(checks)} peers, median "
                     f"{_num(statistics.median(times) if times else None, ' ms')}; {ping_text}")
        for c in checks:
            if not c.ok:
                lines.append(f"    {c.src}: {c.error or 'wrong owner or vIP'}")
    lines.append("")
    direct = sum(1 for r in report.pairs if r.path == "direct")
    met = sum(1 for r in report.pairs if r.ok)
    verdict = "OK" if report.ok else "FAILED"
    lines.append(f"{verdict}: {met}/{len(PAIRS)} pairs met their goal ({direct} direct, "
                 f"{len(report.pairs) - direct} relayed) in {report.total_s:.1f} s "
                 f"(lab {report.build_s:.1f} s, daemons {report.start_s:.1f} s, settle "
                 f"{report.settle_s:.1f} s)" + (f"; {report.error}" if report.error else ""))
    return "\n".join(lines)
