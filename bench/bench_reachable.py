"""Time from `overlay daemon` start behind a NAT to a confirmed relayed address.

    sudo .venv/bin/python bench/bench_reachable.py --delay-ms 20 --rounds 3

Builds the namespace lab (``interop/netns``, the hole-punching matrix
topology) with a user-space delay of ``--delay-ms`` on every NAT router's
WAN link, so a NAT'd peer is ``2 * delay`` (one RTT) from the introducer:

    intro 203.0.113.10  `overlay daemon --introducer` (relay, AutoNAT server)
    pub   203.0.113.11  a second public daemon (AutoNAT needs two servers)
    probe 203.0.113.12  a fresh public daemon per start that knows no one; it pings
    nat1 ─[delay]─ peer1 10.0.1.10   `--relay <intro>`           ("static")
    nat2 ─[delay]─ peer2 10.0.2.10   no --relay: AutoNAT, auto-relay  ("autonat")

For each mode and round a fresh daemon (new key, new home) starts behind
its NAT, and the clock runs from the moment its process is spawned:

- ``ready``: its ``{"event": "ready"}`` line (Python start-up and listen),
- ``circuit``: the first ``/p2p-circuit`` address in ``identity`` (what
  ``overlay id --json`` prints), polled on the daemon's API socket every
  20 ms,
- ``ping``: the first successful ping of that address from ``probe``;
- ``*_after_ready``: the same from the ready line, i.e. without Python's
  start-up.

Figures are medians over ``--rounds``, in seconds and in RTTs of the lab
(``2 * delay``).  Goal: reachable by relay within 3 s of starting.

Needs root (``ip netns``, nft); otherwise it prints one line saying so (and
a JSON object with ``skipped``) and exits 0.  Everything it starts, it
stops; the namespaces go with the lab.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "interop"))  # `netns` lives in interop/, not in the package

from netns import Lab, LabProcess, LabUnavailable, Node, ToolMissing, require_lab  # noqa: E402
from netns.matrix_topology import INTRODUCER_IP, build_matrix_topology  # noqa: E402
from netns.natkinds import NatKind  # noqa: E402

from overlay.daemon.client import ApiClient  # noqa: E402
from overlay.errors import OverlayError  # noqa: E402

START_TIMEOUT = 20.0
POLL = 0.02


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Daemon:
    node: Node
    home: Path
    peer_id: str
    addr: str
    proc: LabProcess
    started: float
    ready: float

    @property
    def api(self) -> Path:
        return self.home / "api.sock"


def start_daemon(lab: Lab, node: Node, ip: str, name: str, *extra: str) -> Daemon:
    home = lab.workdir / name
    home.mkdir(parents=True)
    # AutoNAT may dial back documentation-range addresses in the lab.
    (home / "config.toml").write_text('version = 1\nautonat = "lab"\n')
    argv = [sys.executable, "-m", "overlay.cli", "daemon", "--home", str(home), "--json",
            "--listen", f"/ip4/{ip}/udp/0/quic-v1", "--dns", "off", "--no-mdns", *extra]
    started = time.monotonic()
    proc = lab.popen(node, argv)
    line = proc.wait_for_line(lambda text: text.startswith("{") and '"ready"' in text,
                              START_TIMEOUT)
    ready = time.monotonic()
    info = json.loads(line)
    return Daemon(node, home, info["peer_id"], info["addrs"][0], proc, started, ready)


async def first_circuit(daemon: Daemon, timeout: float) -> tuple[str, float]:
    """The first ``/p2p-circuit`` address ``identity`` reports, and when."""
    async with asyncio.timeout(timeout):
        async with await ApiClient.connect(daemon.api) as api:
            while True:
                reply = await api.call("identity")
                for addr in reply.get("addrs", []):
                    if "/p2p-circuit" in addr:
                        # identity lists the relay's address; a dialer
                        # names the peer behind it too.
                        if not addr.endswith(f"/p2p/{daemon.peer_id}"):
                            addr = f"{addr}/p2p/{daemon.peer_id}"
                        return str(addr), time.monotonic()
                await asyncio.sleep(POLL)


async def first_ping(probe: Daemon, addr: str, timeout: float) -> float:
    """When ``probe`` first pings ``addr`` successfully (retrying at once
    after a failure: the relay may not hold the reservation yet)."""
    async with asyncio.timeout(timeout):
        async with await ApiClient.connect(probe.api) as api:
            last = ""
            while True:
                try:
                    reply = await api.call("ping", {"addr": addr, "count": 1})
                except OverlayError as exc:
                    if str(exc) != last:
                        last = str(exc)
                        log(f"  ping failed (retrying): {exc}")
                    await asyncio.sleep(POLL)
                    continue
                assert reply["path"] == "relayed", reply
                return time.monotonic()


def measure(lab: Lab, node: Node, ip: str, name: str, probe_node: Node, extra: list[str],
            timeout: float) -> dict[str, float]:
    # A fresh probe each time, started first (its start-up is not counted)
    # and bootstrapped from nobody: no one knows it, so the NAT'd node
    # cannot have dialed it, and its ping has to go through the relay.
    probe = start_daemon(lab, probe_node, probe_node.address("public"), f"probe-{name}")
    try:
        daemon = start_daemon(lab, node, ip, name, *extra)
        try:
            addr, at_circuit = asyncio.run(first_circuit(daemon, timeout))
            at_ping = asyncio.run(first_ping(probe, addr, timeout))
        finally:
            daemon.proc.stop()
    finally:
        probe.proc.stop()
    return {"ready": daemon.ready - daemon.started, "circuit": at_circuit - daemon.started,
            "ping": at_ping - daemon.started,
            # What the network part costs, without Python's start-up.
            "circuit_after_ready": at_circuit - daemon.ready,
            "ping_after_ready": at_ping - daemon.ready}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rtt = 2 * args.delay_ms / 1000
    with Lab() as lab:
        topo = build_matrix_topology(lab, [NatKind.PORT_RESTRICTED_CONE] * 2,
                                     wan_delay_ms=args.delay_ms)
        pub = topo.add_public_host(lab, "pub")
        probe_node = topo.add_public_host(lab, "probe")
        intro = start_daemon(lab, topo.introducer, INTRODUCER_IP, "intro", "--introducer")
        daemons = [intro]
        try:
            daemons.append(start_daemon(lab, pub, pub.address("public"), "pub",
                                        "--bootstrap", intro.addr))
            modes = {
                "static": (topo.peers[0], ["--relay", intro.addr, "--bootstrap", intro.addr]),
                "autonat": (topo.peers[1], ["--bootstrap", intro.addr,
                                            "--bootstrap", daemons[1].addr]),
            }
            samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
            for round_no in range(args.rounds):
                for mode, (peer, extra) in modes.items():
                    got = measure(lab, peer.client, peer.client_ip, f"{mode}{round_no}",
                                  probe_node, extra, args.timeout)
                    samples[mode].append(got)
                    log(f"round {round_no + 1}: {mode:8} ready {got['ready']:.2f} s, "
                        f"circuit {got['circuit']:.2f} s, ping {got['ping']:.2f} s")
        finally:
            for daemon in daemons:
                daemon.proc.stop()
    out: dict[str, Any] = {"delay_ms": args.delay_ms, "rtt_s": rtt, "rounds": args.rounds}
    for mode, runs in samples.items():
        for what in ("ready", "circuit", "ping", "circuit_after_ready", "ping_after_ready"):
            median = statistics.median(r[what] for r in runs)
            out[f"{mode}_{what}_s"] = round(median, 3)
            out[f"{mode}_{what}_rtts"] = round(median / rtt, 1)
        out[f"{mode}_samples"] = [{k: round(v, 3) for k, v in r.items()} for r in runs]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="one-way delay on each NAT router's WAN link (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="daemon starts per mode; median")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per stage")
    args = parser.parse_args()
    try:
        require_lab()
    except (LabUnavailable, ToolMissing) as exc:
        print(f"bench_reachable skipped: {exc}", file=sys.stderr)
        print(json.dumps({"skipped": str(exc)}))
        return 0
    out = run(args)
    for mode in ("static", "autonat"):
        log(f"{mode:8}: circuit address {out[f'{mode}_circuit_s']:.2f} s "
            f"({out[f'{mode}_circuit_rtts']} RTTs), pinged {out[f'{mode}_ping_s']:.2f} s "
            f"({out[f'{mode}_ping_rtts']} RTTs) after start; of which start-up to ready "
            f"{out[f'{mode}_ready_s']:.2f} s, then circuit in "
            f"{out[f'{mode}_circuit_after_ready_rtts']} RTTs, ping in "
            f"{out[f'{mode}_ping_after_ready_rtts']} RTTs (goal: reachable within 3 s)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
