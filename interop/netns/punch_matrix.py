"""The hole-punching matrix: every pair of NAT kinds, real daemons, many tries.

    sudo .venv/bin/python interop/netns/punch_matrix.py [--tries 10] [--delay-ms 20]
        [--cells full-cone:symmetric-random port-restricted-cone ...] [--json FILE]
        [--budget-s 2400] [--transfer-mb 10]
    sudo .venv/bin/python bench/punch_matrix.py ...          # the same, from the benchmarks

For each cell (a pair of ``NatKind``s) it builds the matrix topology
(``matrix_topology.py``) with the user-space delay on both NATs' WAN links:

    intro  203.0.113.10   `overlay daemon --introducer` (relay, STUN)
    intro2 203.0.113.11   a second introducer: STUN on a second IP
    nat1 ─[delay]─ peer1  kind X
    nat2 ─[delay]─ peer2  kind Y

and runs ``--tries`` tries.  A try:

1. starts two fresh daemons (new keys, new homes, new UDP ports: fresh NAT
   mappings) with ``--relay <intro>`` and both introducers as ``--stun``
   servers, one behind each NAT, and waits for both to hold a reservation
   (``relay_status``) and to have STUN's mapping verdict (``nat_status``:
   birthday punching needs to know who is symmetric);
2. ``connect``s A to B's circuit address (a relayed connection; B, dialled
   through the relay, runs DCUtR as the initiator);
3. polls B's ``holepunch_status`` until B recorded how its session with A
   ended, and A's ``peers`` until the connection to B is direct (bounded;
   every poll is an API call on the daemon's socket, paced at 50 ms);
4. pings B from A (``path`` says how it got there); with ``--transfer-mb``
   B registers a name and serves ``cat``, and A echoes that many random
   bytes through ``overlay name connect --json`` (every byte must come
   back; ``path`` and ``punched`` as that command reported them);
5. stops both daemons and flushes the NATs' conntrack and cone maps.

In a cell of two different kinds the roles alternate: even tries have the
row's kind dial (A) and the column's kind dialled (B), odd tries the other
way round, so both DCUtR roles meet both NATs.

Recorded per try: direct or relayed, how (``punched``, ``unilateral``, or
the failure reason B's session gave), attempts, B's time from the relayed
connection's arrival (its adoption on B, after Noise and yamux over the
circuit) to the direct one's adoption (``elapsed_ms``; the relay's stop
hint reached B two relayed round trips before that clock starts, and B's
punch packets towards it are ``hint_packets``) and of its exchange
(``exchange_ms``), both also in RTTs of the lab (``4 x delay``: A and B
are that far apart directly and through the introducer), the relayed RTT
the daemon measured, and whether the ping got through.  Per cell: direct
rate, first-attempt rate of the successes, the times' median and maximum,
and the failures by reason.  Prints the table (text) and writes JSON.

Bounded: every wait has a deadline, ``--budget-s`` stops starting new tries
once spent (the table says how many tries each cell got), and everything
started is stopped; each cell's namespaces go with its lab.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `netns` lives in interop/, not in the package
    sys.path.insert(0, str(HERE.parent))
if str(HERE.parent.parent) not in sys.path:  # `overlay` when run from elsewhere
    sys.path.insert(1, str(HERE.parent.parent))

from netns.daemons import (  # noqa: E402
    AUTONAT_LAB_CONFIG,
    START_TIMEOUT,
    Daemon,
    overlay_argv,
    start_daemon,
)
from netns.lab import Lab, LabError  # noqa: E402
from netns.matrix_topology import MatrixPeer, MatrixTopology, build_matrix_topology  # noqa: E402
from netns.natkinds import TABLE, NatKind, UdpTimeouts  # noqa: E402

from overlay.daemon.client import ApiClient  # noqa: E402

T = TypeVar("T")

__all__ = [
    "ALL_CELLS",
    "CellResult",
    "TryResult",
    "format_table",
    "goal_of",
    "parse_cell",
    "run_cell",
    "run_matrix",
]

ORDER = [NatKind.NONE, NatKind.FULL_CONE, NatKind.RESTRICTED_CONE,
         NatKind.PORT_RESTRICTED_CONE, NatKind.SYMMETRIC_SEQUENTIAL, NatKind.SYMMETRIC_RANDOM]
SHORT = {NatKind.NONE: "none", NatKind.FULL_CONE: "full", NatKind.RESTRICTED_CONE: "restricted",
         NatKind.PORT_RESTRICTED_CONE: "port-restr", NatKind.SYMMETRIC_SEQUENTIAL: "sym-seq",
         NatKind.SYMMETRIC_RANDOM: "sym-rand"}
ALIASES = {**{k.value: k for k in NatKind}, **{v: k for k, v in SHORT.items()},
           "port-restricted": NatKind.PORT_RESTRICTED_CONE, "restricted": NatKind.RESTRICTED_CONE,
           "full": NatKind.FULL_CONE, "sym-random": NatKind.SYMMETRIC_RANDOM,
           "sym-sequential": NatKind.SYMMETRIC_SEQUENTIAL, "symmetric": NatKind.SYMMETRIC_RANDOM}
ALL_CELLS = [(x, y) for i, x in enumerate(ORDER) for y in ORDER[i:]]
"""Every unordered pair: 21 cells."""
SIMPLE = {NatKind.NONE, NatKind.FULL_CONE, NatKind.RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE}
SYMMETRIC = {NatKind.SYMMETRIC_SEQUENTIAL, NatKind.SYMMETRIC_RANDOM}
OPEN = {NatKind.NONE, NatKind.FULL_CONE, NatKind.RESTRICTED_CONE}

DAEMON_FLAGS = ("--dns", "off", "--no-mdns")
CLI_TIMEOUT = 30.0
RESERVE_TIMEOUT = 30.0
NAT_TIMEOUT = 20.0
START_WAIT = max(START_TIMEOUT, 45.0)
"""For a daemon's ``ready``: on a loaded machine (2 cores, load 10) 15 s was
seen to pass, which is no punching result."""
INTRO2_IP = "203.0.113.11"
"""A second introducer: STUN servers on two IPs tell a symmetric NAT from a cone."""
CONNECT_TIMEOUT = 20.0
SESSION_TIMEOUT = 45.0
"""Three failed attempts take about 17 s; birthday probing may take longer."""
DIRECT_TIMEOUT = 10.0
"""After B recorded a success, until A's ``peers`` shows it."""
PING_TIMEOUT = 15.0
POLL_INTERVAL = 0.05
"""Pacing between two API polls; a wait ends on what the daemon reports."""
API_TIMEOUT = 10.0
CELL_UDP_TIMEOUTS = UdpTimeouts(unreplied=30, stream=60)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- cells and goals ---------------------------------------------------------------

def parse_cell(text: str) -> tuple[NatKind, NatKind]:
    """``X:Y`` (or ``X`` for ``X:X``) with NatKind values or short names."""
    parts = text.split(":")
    if len(parts) > 2 or not all(p in ALIASES for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: want KIND or KIND:KIND, KIND one of {', '.join(sorted(ALIASES))}")
    x = ALIASES[parts[0]]
    y = ALIASES[parts[-1]]
    return x, y


def goal_of(x: NatKind, y: NatKind) -> tuple[str, float]:
    """What the issue asks of a cell: (``direct`` or ``relayed``, the rate)."""
    if x in SYMMETRIC and y in SYMMETRIC:
        return "relayed", 1.0
    if {x, y} & SYMMETRIC and NatKind.PORT_RESTRICTED_CONE in (x, y):
        return "direct", 0.95
    return "direct", 1.0


def is_simple(x: NatKind, y: NatKind) -> bool:
    """The pairs that should go direct every time (the first-attempt goal)."""
    return goal_of(x, y) == ("direct", 1.0)


# -- the API from the root namespace ---------------------------------------------------

def api(daemon: Daemon, op: str, args: dict[str, Any] | None = None,
        timeout: float = API_TIMEOUT) -> dict[str, Any]:
    """One API call on the daemon's socket (a Unix socket: reachable from
    any namespace).  Raises ``ApiError``/``OSError``/``TimeoutError``."""
    async def call() -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            async with await ApiClient.connect(daemon.api_socket) as client:
                return dict(await client.call(op, args or {}))
    return dict(asyncio.run(call()))


def poll_api(fetch: Callable[[], T], until: Callable[[T], bool], timeout: float) -> T:
    """``fetch()`` until ``until`` holds or ``timeout`` passes; the last
    result.  Polls are paced by ``POLL_INTERVAL``; what ends the wait is the
    daemon's answer, never the clock alone."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if until(result) or time.monotonic() >= deadline:
            return result
        time.sleep(POLL_INTERVAL)


def peer_entry(a: Daemon, peer_id: str) -> dict[str, Any]:
    for entry in api(a, "peers")["peers"]:
        if entry["peer_id"] == peer_id:
            return dict(entry)
    return {}


def session_with(b: Daemon, peer_id: str) -> dict[str, Any] | None:
    """B's latest finished DCUtR session with ``peer_id``, if any."""
    done = [s for s in api(b, "holepunch_status")["recent"] if s.get("peer") == peer_id]
    return dict(done[-1]) if done else None


# -- results -------------------------------------------------------------------------

@dataclass
class TryResult:
    index: int
    a_kind: str
    b_kind: str
    outcome: str
    """``direct``, ``relayed`` or ``error``."""
    how: str = ""
    """B's session: punched, unilateral, or why it failed; or the error."""
    attempts: int | None = None
    elapsed_ms: float | None = None
    exchange_ms: float | None = None
    rtt_ms: float | None = None
    elapsed_rtts: float | None = None
    exchange_rtts: float | None = None
    seen_ms: float | None = None
    """From ``connect``'s reply to the runner seeing the direct path (paced polls)."""
    reachable: bool | None = None
    ping_path: str | None = None
    direct_addr: str | None = None
    exits: list[int] = field(default_factory=list)
    seconds: float = 0.0
    verdicts: list[str] = field(default_factory=list)
    """A's and B's STUN mapping verdicts before the connection."""
    hint_packets: int | None = None
    """B's punch packets towards the relay's stop hint (A's observed
    address), sent before B's clock starts (``holepunch_status``)."""
    transfer: dict[str, Any] | None = None
    """With ``--transfer-mb``: bytes sent, whether every byte came back
    (``intact``), the path and ``punched`` that ``name connect --json``
    reported, seconds, or ``error``."""


def _short(value: str) -> str:
    return SHORT[NatKind(value)]


def _median(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.median(got), 2) if got else None


def _max(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(max(got), 2) if got else None


@dataclass
class CellResult:
    x: NatKind
    y: NatKind
    delay_ms: float
    tries: list[TryResult] = field(default_factory=list)
    build_s: float = 0.0
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{SHORT[self.x]} x {SHORT[self.y]}"

    def summary(self) -> dict[str, Any]:
        tries = self.tries
        direct = [t for t in tries if t.outcome == "direct"]
        relayed = [t for t in tries if t.outcome != "direct"]
        first = [t for t in direct if t.attempts in (None, 0, 1)]
        goal, rate = goal_of(self.x, self.y)
        direct_rate = len(direct) / len(tries) if tries else None
        reachable = sum(1 for t in tries if t.reachable)
        if not tries:
            met = None
        elif goal == "direct":
            met = direct_rate is not None and direct_rate >= rate
        else:
            met = not direct and reachable == len(tries)
        by_roles: dict[str, dict[str, int]] = {}
        for t in tries:
            roles = by_roles.setdefault(f"A={t.a_kind} B={t.b_kind}", {"tries": 0, "direct": 0})
            roles["tries"] += 1
            roles["direct"] += t.outcome == "direct"
        return {
            "cell": [self.x.value, self.y.value],
            "tries": len(tries),
            "direct": len(direct),
            "direct_rate": None if direct_rate is None else round(direct_rate, 3),
            "first_attempt": len(first),
            "first_attempt_rate": round(len(first) / len(direct), 3) if direct else None,
            "hows": dict(Counter(t.how for t in direct)),
            "elapsed_ms_median": _median(t.elapsed_ms for t in direct),
            "elapsed_ms_max": _max(t.elapsed_ms for t in direct),
            "elapsed_rtts_median": _median(t.elapsed_rtts for t in direct),
            "elapsed_rtts_max": _max(t.elapsed_rtts for t in direct),
            "exchange_ms_median": _median(t.exchange_ms for t in direct),
            "exchange_rtts_median": _median(t.exchange_rtts for t in direct),
            "relayed_rtt_ms_median": _median(t.rtt_ms for t in tries),
            "seen_ms_median": _median(t.seen_ms for t in direct),
            "reachable": reachable,
            "failures": dict(Counter(f"{t.how} [A={_short(t.a_kind)} B={_short(t.b_kind)}]"
                                     for t in relayed)),
            "by_roles": by_roles,
            "transfers": sum(1 for t in tries if t.transfer is not None),
            "transfers_intact": sum(1 for t in tries if t.transfer and t.transfer.get("intact")),
            "goal": {"path": goal, "rate": rate},
            "goal_met": met,
            "build_s": round(self.build_s, 1),
            "seconds": round(sum(t.seconds for t in tries), 1),
            "error": self.error,
        }


# -- one cell ---------------------------------------------------------------------------

def _peer_ip(peer: MatrixPeer) -> str:
    return peer.client_ip


def fresh_mappings(lab: Lab, topo: MatrixTopology) -> None:
    """Forget every NAT mapping: conntrack's entries and the cones' maps."""
    for peer in topo.peers:
        if not peer.kind.translates:
            continue
        if shutil.which("conntrack"):
            lab.run(peer.nat, ["conntrack", "-F"], timeout=10)
        if peer.kind in (NatKind.FULL_CONE, NatKind.RESTRICTED_CONE):
            lab.run(peer.nat, ["nft", "flush", "map", "ip", TABLE, "inside"], timeout=10)
        if peer.kind is NatKind.RESTRICTED_CONE:
            lab.run(peer.nat, ["nft", "flush", "set", "ip", TABLE, "peers"], timeout=10)


def _start_pair(lab: Lab, peers: Sequence[tuple[MatrixPeer, str]],
                intro: Daemon, stun: Sequence[str] = ()) -> list[Daemon]:
    """``daemons.start_daemon`` for several peers at once: all are spawned
    before the first ``ready`` is awaited, so their start-ups overlap."""
    spawned = []
    for peer, name in peers:
        home = lab.workdir / name
        home.mkdir(parents=True)
        (home / "config.toml").write_text(AUTONAT_LAB_CONFIG)
        argv = ["daemon", "--home", str(home), "--json", "--listen",
                f"/ip4/{_peer_ip(peer)}/udp/0/quic-v1", *DAEMON_FLAGS, "--relay", intro.addr,
                *stun]
        spawned.append((peer, home, lab.popen(peer.client, overlay_argv(argv))))
    started = []
    for peer, home, proc in spawned:
        line = proc.wait_for_line(lambda text: text.startswith("{") and '"ready"' in text,
                                  START_WAIT)
        ready = json.loads(line)
        addr = next(a for a in ready["addrs"] if a.startswith(f"/ip4/{_peer_ip(peer)}/udp/"))
        started.append(Daemon(peer.client, home, ready["peer_id"], addr, proc, CLI_TIMEOUT))
    return started


def _circuits(daemons: Sequence[Daemon]) -> list[str]:
    """Each daemon's circuit address, once all of them hold a reservation."""
    def fetch() -> list[dict[str, Any]]:
        return [api(d, "relay_status") for d in daemons]

    def held(reply: dict[str, Any]) -> bool:
        return bool(reply["reservations"] and reply["advertised"])

    replies = poll_api(fetch, lambda rs: all(held(r) for r in rs), RESERVE_TIMEOUT)
    if not all(held(r) for r in replies):
        raise TimeoutError(f"no reservation within {RESERVE_TIMEOUT:g} s: {replies}")
    return [str(r["advertised"][0]) for r in replies]


def _nat_verdicts(daemons: Sequence[Daemon]) -> list[str]:
    """Each daemon's STUN mapping verdict, once every one has one: birthday
    punching decides who sprays from them (a symmetric side needs STUN
    servers on two IPs to know it is one)."""
    def fetch() -> list[str]:
        return [str(api(d, "nat_status")["mapping"]["behaviour"]) for d in daemons]

    verdicts = poll_api(fetch, lambda vs: "unknown" not in vs, NAT_TIMEOUT)
    if "unknown" in verdicts:
        raise TimeoutError(f"no STUN mapping verdict within {NAT_TIMEOUT:g} s: {verdicts}")
    return verdicts


ECHO_PROTOCOL = "/test/echo/1.0.0"
TRANSFER_TIMEOUT = 90.0
RELAY_DATA_CONFIG = AUTONAT_LAB_CONFIG + "[relay_limits]\ndata = 64000000\n"
"""The introducer's config with ``--transfer-mb``: the spec's default relay
limit (128 KiB a direction) would cut a relayed 10 MB transfer."""


def echo_transfer(lab: Lab, a: Daemon, b: Daemon, name: str, size: int) -> dict[str, Any]:
    """B registers ``name`` and serves ``cat`` on ``ECHO_PROTOCOL``; A sends
    ``size`` random bytes with ``overlay name connect NAME PROTO --json``
    and must get every byte back.  Whatever path A's connection to B took."""
    payload = hashlib.shake_256(secrets.token_bytes(16)).digest(size)
    started = time.monotonic()
    serve = None
    try:
        done = lab.run(b.node, overlay_argv(["--home", str(b.home), "name", "register", name,
                                             "--json"]), timeout=CLI_TIMEOUT)
        if done.returncode != 0:
            return {"bytes": size, "intact": False,
                    "error": f"name register: {done.stderr.strip()[-200:]}"}
        serve = lab.popen(b.node, overlay_argv(["--home", str(b.home), "serve", ECHO_PROTOCOL,
                                                "--", "cat"]))
        serve.wait_for_line(lambda text: text.startswith("serving"), START_WAIT)
        sent = subprocess.run(
            ["ip", "netns", "exec", a.node.namespace,
             *overlay_argv(["--home", str(a.home), "name", "connect", name, ECHO_PROTOCOL,
                            "--json"])],
            input=payload, capture_output=True, timeout=TRANSFER_TIMEOUT, check=False)
        first = (sent.stderr.decode(errors="replace").splitlines() or [""])[0]
        info = json.loads(first) if first.startswith("{") else {}
        return {"bytes": size, "intact": sent.returncode == 0 and len(sent.stdout) == size
                and hashlib.sha256(sent.stdout).digest() == hashlib.sha256(payload).digest(),
                "received": len(sent.stdout), "path": info.get("path"),
                "punched": info.get("punched"),
                "seconds": round(time.monotonic() - started, 1),
                **({} if sent.returncode == 0 else
                   {"error": sent.stderr.decode(errors="replace").strip()[-200:]})}
    except (OSError, subprocess.TimeoutExpired, ValueError, LabError) as exc:
        return {"bytes": size, "intact": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        if serve is not None:
            serve.stop()


def _rtts(ms: float | None, rtt_ms: float | None) -> float | None:
    return None if ms is None or not rtt_ms else round(ms / rtt_ms, 2)


def one_try(lab: Lab, topo: MatrixTopology, intro: Daemon, index: int,
            a_peer: MatrixPeer, b_peer: MatrixPeer, stun: Sequence[str] = (),
            transfer_bytes: int = 0) -> TryResult:
    """One relayed connection A -> B and what became of it (module doc)."""
    result = TryResult(index, a_peer.kind.value, b_peer.kind.value, "error")
    lab_rtt = 4 * topo.wan_delay_ms
    started = time.monotonic()
    running: list[Daemon] = []
    try:
        # No --bootstrap: the DHT would learn B's circuit address and dial
        # it before the runner does, perhaps before the NAT verdicts.
        a, b = _start_pair(lab, [(a_peer, f"a{index}"), (b_peer, f"b{index}")], intro, stun)
        running += [a, b]
        _, b_circuit = _circuits([a, b])
        if stun:
            result.verdicts = _nat_verdicts([a, b])
        connected = api(a, "connect", {"addr": b_circuit}, timeout=CONNECT_TIMEOUT)
        t_connected = time.monotonic()
        if connected["path"] != "relayed":
            raise AssertionError(f"the first connection was not relayed: {connected}")
        session = poll_api(lambda: session_with(b, a.peer_id), lambda s: s is not None,
                           SESSION_TIMEOUT)
        if session is None:
            entry = peer_entry(a, b.peer_id)
            result.outcome = "direct" if entry.get("path") == "direct" else "relayed"
            result.how = (f"no session recorded by B within {SESSION_TIMEOUT:g} s "
                          f"(counters {api(b, 'holepunch_status')['counters']})")
        else:
            result.how = str(session.get("how"))
            result.attempts = session.get("attempts")
            result.hint_packets = api(b, "holepunch_status")["counters"].get("hint_packets")
            result.rtt_ms = session.get("rtt_ms")
            if session.get("ok"):
                result.elapsed_ms = session.get("elapsed_ms")
                result.exchange_ms = session.get("exchange_ms")
                result.elapsed_rtts = _rtts(result.elapsed_ms, lab_rtt)
                result.exchange_rtts = _rtts(result.exchange_ms, lab_rtt)
            entry = poll_api(lambda: peer_entry(a, b.peer_id),
                             lambda e: e.get("path") == "direct",
                             DIRECT_TIMEOUT if session.get("ok") else 0)
            result.outcome = "direct" if entry.get("path") == "direct" else "relayed"
            if result.outcome == "direct":
                result.seen_ms = round((time.monotonic() - t_connected) * 1000, 1)
                result.direct_addr = next((c["addr"] for c in entry.get("connections", [])
                                           if c.get("path") == "direct"), None)
            elif session.get("ok"):
                result.how = f"B says {result.how}, but A's peers shows {entry.get('path')}"
        try:
            pinged = api(a, "ping", {"peer": b.peer_id, "count": 1}, timeout=PING_TIMEOUT)
            result.reachable, result.ping_path = True, str(pinged.get("path"))
        except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - recorded
            result.reachable, result.ping_path = False, f"{type(exc).__name__}: {exc}"[:200]
        if transfer_bytes:
            result.transfer = echo_transfer(lab, a, b, f"m{index}x{secrets.token_hex(3)}.ovl",
                                            transfer_bytes)
    except Exception as exc:  # noqa: BLE001 - one bad try is recorded, the matrix goes on
        result.outcome = "error"
        result.how = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    finally:
        for daemon in running:
            result.exits.append(daemon.proc.stop())
        fresh_mappings(lab, topo)
        result.seconds = round(time.monotonic() - started, 1)
    return result


def run_cell(lab: Lab, x: NatKind, y: NatKind, tries: int, *, delay_ms: float = 20.0,
             deadline: float | None = None, alternate: bool = True, two_stun: bool = True,
             transfer_bytes: int = 0, progress: Callable[[str], None] = log) -> CellResult:
    """Build the cell's topology in ``lab`` and run ``tries`` tries (fewer
    if ``deadline``, a ``time.monotonic()`` value, passes first).  X dials
    (A) and Y is dialled (B); with ``alternate`` odd tries swap the roles
    when X and Y differ.  ``two_stun`` starts a second introducer and
    gives both peers the two as STUN servers, and each try waits for both
    peers' mapping verdicts before connecting.  ``transfer_bytes`` > 0 ends
    each try with an echo of that many bytes (``echo_transfer``)."""
    cell = CellResult(x, y, delay_ms)
    t0 = time.monotonic()
    topo = build_matrix_topology(lab, [x, y], wan_delay_ms=delay_ms,
                                 udp_timeouts=CELL_UDP_TIMEOUTS)
    intro = start_daemon(lab, topo.introducer, topo.introducer_ip, *DAEMON_FLAGS,
                         "--introducer", name="intro",
                         config=RELAY_DATA_CONFIG if transfer_bytes else AUTONAT_LAB_CONFIG,
                         cli_timeout=CLI_TIMEOUT, timeout=START_WAIT)
    running = [intro]
    stun: list[str] = []
    p1, p2 = topo.peers
    try:
        if two_stun:
            intro2_node = topo.add_public_host(lab, "intro2", INTRO2_IP)
            intro2 = start_daemon(lab, intro2_node, INTRO2_IP, *DAEMON_FLAGS, "--introducer",
                                  name="intro2", config=AUTONAT_LAB_CONFIG,
                                  cli_timeout=CLI_TIMEOUT, timeout=START_WAIT)
            running.append(intro2)
            stun = ["--stun", f"{topo.introducer_ip}:{intro.port}",
                    "--stun", f"{INTRO2_IP}:{intro2.port}"]
        cell.build_s = time.monotonic() - t0
        for index in range(tries):
            if deadline is not None and time.monotonic() >= deadline:
                cell.error = f"its share of the budget was spent after {index} of {tries} tries"
                break
            swap = alternate and x is not y and index % 2 == 1
            a_peer, b_peer = (p2, p1) if swap else (p1, p2)
            got = one_try(lab, topo, intro, index, a_peer, b_peer, stun, transfer_bytes)
            cell.tries.append(got)
            extra = "" if got.elapsed_ms is None else (
                f", {got.elapsed_ms:.0f} ms = {got.elapsed_rtts} RTT")
            progress(f"  {cell.name} #{index + 1}/{tries} A={SHORT[a_peer.kind]} "
                     f"B={SHORT[b_peer.kind]}: {got.outcome} ({got.how}; attempts "
                     f"{got.attempts}{extra}; ping {got.ping_path}"
                     f"{_transfer_text(got.transfer)}) {got.seconds:.1f} s")
    finally:
        for daemon in running:
            daemon.proc.stop()
    return cell


def _transfer_text(transfer: dict[str, Any] | None) -> str:
    if transfer is None:
        return ""
    mb = transfer["bytes"] / 1e6
    if transfer.get("intact"):
        return (f"; {mb:g} MB echoed intact over {transfer.get('path')} in "
                f"{transfer.get('seconds')} s")
    return f"; {mb:g} MB echo FAILED: {transfer.get('error') or transfer.get('received')}"


# -- the table ------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(cells: Sequence[CellResult]) -> str:
    """The text table (markdown)."""
    head = ("| A x B | tries | direct | first attempt | relayed -> direct, ms (median / max) "
            "| in RTTs (median / max) | exchange, RTTs | goal | on failure |")
    lines = [head, "|" + "---|" * 9]
    for cell in cells:
        s = cell.summary()
        goal = s["goal"]
        goal_text = (f"{goal['path']} {goal['rate']:.0%}"
                     + ("" if s["goal_met"] is None else (" met" if s["goal_met"] else " MISSED")))
        failures = "; ".join(f"{n}x {why}" for why, n in sorted(s["failures"].items())) or "-"
        if s["tries"] and s["direct"] < s["tries"]:
            failures += f" (reachable {s['reachable']}/{s['tries']})"
        if s["error"]:
            failures += f" [{s['error']}]"
        if s["transfers"]:
            failures += f" (echo intact {s['transfers_intact']}/{s['transfers']})"
        first = (f"{s['first_attempt']}/{s['direct']}" if s["direct"] else "-")
        lines.append(
            f"| {cell.name} | {s['tries']} | {s['direct']}/{s['tries']} | {first} "
            f"| {_fmt(s['elapsed_ms_median'])} / {_fmt(s['elapsed_ms_max'])} "
            f"| {_fmt(s['elapsed_rtts_median'], 1)} / {_fmt(s['elapsed_rtts_max'], 1)} "
            f"| {_fmt(s['exchange_rtts_median'], 1)} | {goal_text} | {failures} |")
    return "\n".join(lines)


def goals_report(cells: Sequence[CellResult]) -> dict[str, Any]:
    """The issue's goals over the whole matrix."""
    simple = [t for c in cells if is_simple(c.x, c.y) for t in c.tries if t.outcome == "direct"]
    first = [t for t in simple if t.attempts in (None, 0, 1)]
    direct = [t for c in cells for t in c.tries if t.outcome == "direct"]
    within = [t for t in direct if t.elapsed_rtts is not None and t.elapsed_rtts <= 3]
    timed = [t for t in direct if t.elapsed_rtts is not None]
    return {
        "cells_met": sum(1 for c in cells if c.summary()["goal_met"]),
        "cells": len(cells),
        "cells_missed": [c.name for c in cells if c.summary()["goal_met"] is False],
        "simple_first_attempt": f"{len(first)}/{len(simple)}",
        "simple_first_attempt_rate": round(len(first) / len(simple), 3) if simple else None,
        "direct_within_3_rtts": f"{len(within)}/{len(timed)}",
        "elapsed_rtts_median_all": _median(t.elapsed_rtts for t in direct),
    }


def run_matrix(cells: Sequence[tuple[NatKind, NatKind]], tries: int, delay_ms: float,
               budget_s: float, transfer_bytes: int = 0) -> tuple[list[CellResult], float]:
    """Each cell in a lab of its own; returns the results and the seconds spent."""
    started = time.monotonic()
    deadline = started + budget_s
    results = []
    for number, (x, y) in enumerate(cells, 1):
        if time.monotonic() >= deadline:
            log(f"budget of {budget_s:g} s spent: {len(cells) - number + 1} cells not run")
            break
        log(f"[{number}/{len(cells)}] {SHORT[x]} x {SHORT[y]} "
            f"({time.monotonic() - started:.0f} s so far)")
        # Each cell may use its share of what is left, so a fast cell leaves
        # time to the slow (failing) ones after it.
        share = (deadline - time.monotonic()) / (len(cells) - number + 1)
        with Lab() as lab:
            try:
                results.append(run_cell(lab, x, y, tries, delay_ms=delay_ms,
                                        deadline=time.monotonic() + share,
                                        transfer_bytes=transfer_bytes))
            except Exception as exc:  # noqa: BLE001 - a cell that cannot be built is reported
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                cell = CellResult(x, y, delay_ms, error=f"{type(exc).__name__}: {first_line}"[:300])
                results.append(cell)
                log(f"  cell failed: {cell.error}\n{exc}")
    return results, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="punch_matrix.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=10, help="tries per cell (default 10)")
    parser.add_argument("--cells", nargs="+", type=parse_cell, default=None,
                        help="cells as X:Y (default: all 21 pairs of the six kinds)")
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="one-way delay on each NAT's WAN link (default 20)")
    parser.add_argument("--budget-s", type=float, default=2400.0,
                        help="start no try after this many seconds (default 2400)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--transfer-mb", type=float, default=0.0,
                        help="end each try with an echo of this many MB through "
                             "`overlay name connect` (default 0: none)")
    args = parser.parse_args(argv)
    if args.tries < 1:
        parser.error("--tries must be at least 1")
    cells = args.cells or ALL_CELLS
    log(f"punch matrix: {len(cells)} cells x {args.tries} tries, {args.delay_ms:g} ms per WAN "
        f"link (lab RTT {4 * args.delay_ms:g} ms), budget {args.budget_s:g} s")
    results, spent = run_matrix(cells, args.tries, args.delay_ms, args.budget_s,
                                int(args.transfer_mb * 1e6))
    table = format_table(results)
    goals = goals_report(results)
    print(table)
    print(f"\n{spent / 60:.1f} min; goals: {goals}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "delay_ms": args.delay_ms, "lab_rtt_ms": 4 * args.delay_ms,
            "tries_asked": args.tries, "seconds": round(spent, 1), "goals": goals,
            "table": table,
            "cells": [{**c.summary(), "try_results": [asdict(t) for t in c.tries]}
                      for c in results],
        }, indent=1) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
