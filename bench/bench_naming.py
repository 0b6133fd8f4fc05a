"""Name resolution latency: in the simulator and through the stream API.

1. Simulator: ``--resolutions`` names, each registered at its 20 closest
   nodes of an ``--nodes`` network with per-pair RTTs drawn around
   ``--rtt-ms`` (lognormal); every resolution runs the resolver's logic
   (GET_VALUE lookup, early decision on agreeing records).  Reported next
   to the median RTT.  Goals at N=10,000, RTT ~100 ms: p50 <= 500 ms,
   p99 <= 2 s.
2. Loopback: real nodes over QUIC; one daemon API serves ``name_resolve``.
   After one network resolve, ``--api-rounds`` cached resolves are timed
   against the same-run baseline of the cheapest API op
   (``listen_addrs``).  Goal: a cached resolve under 1 ms.

Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/bench_naming.py --nodes 10000 --resolutions 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from overlay.daemon.api import ApiServer
from overlay.daemon.client import ApiClient
from overlay.daemon.ops import NodeOps
from overlay.daemon.ops_name import NameOps
from overlay.daemon.pump import PumpLedger
from overlay.host import Host, HostConfig
from overlay.identity import Ed25519PrivateKey
from overlay.kad.lookup import LookupConfig
from overlay.kad.records import default_registry
from overlay.kad.service import KadService
from overlay.kad.service_config import KadServiceConfig
from overlay.naming import NamingConfig
from overlay.naming.kad_client import KadNameClient, register_name_namespace
from overlay.naming.service import NameService, NameServiceConfig, Targets
from overlay.sim.naming import NameSimConfig, simulate_resolutions
from overlay.sim.network import NetworkModel
from overlay.sim.report import percentile

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_sim(args: argparse.Namespace) -> dict[str, Any]:
    rtt = args.rtt_ms / 1000.0
    config = NameSimConfig(
        nodes=args.nodes, resolutions=args.resolutions, seed=args.seed, quorum=args.quorum,
        adversaries=args.adversaries,
        network=NetworkModel(median_rtt=rtt, min_rtt=min(0.005, rtt), max_rtt=max(2.0, rtt)),
        lookup=LookupConfig(peer_timeout=1.0))
    started = time.perf_counter()
    _log(f"simulating {args.resolutions} resolutions at N={args.nodes} (seed {args.seed}) …")
    outcomes = simulate_resolutions(config)
    latency = [o.latency * 1000.0 for o in outcomes]
    p50, p99 = percentile(latency, 0.5), percentile(latency, 0.99)
    return {
        "seed": args.seed,
        "nodes": args.nodes,
        "resolutions": len(outcomes),
        "adversaries": args.adversaries,
        "quorum": args.quorum,
        "median_rtt_ms": args.rtt_ms,
        "resolve_p50_ms": round(p50, 1),
        "resolve_p99_ms": round(p99, 1),
        "resolve_p50_rtts": round(p50 / args.rtt_ms, 2),
        "resolve_p99_rtts": round(p99 / args.rtt_ms, 2),
        "lookup_end_p50_ms": round(percentile([o.lookup_time * 1000 for o in outcomes], 0.5), 1),
        "early_fraction": sum(o.early for o in outcomes) / len(outcomes),
        "correct_fraction": sum(o.correct for o in outcomes) / len(outcomes),
        "final_correct_fraction": sum(o.final_correct for o in outcomes) / len(outcomes),
        "median_messages": statistics.median(o.messages for o in outcomes),
        "goal_met": p50 <= 500.0 and p99 <= 2000.0,
        "wall_s": round(time.perf_counter() - started, 1),
    }


async def _node(stack: AsyncExitStack, naming: NamingConfig,
                bootstrap: str | None) -> tuple[Host, NameService]:
    key = Ed25519PrivateKey.generate()
    host = await stack.enter_async_context(Host(key, HostConfig()))
    await host.listen([LOOPBACK])
    registry = default_registry()
    register_name_namespace(registry, naming)
    kad = await stack.enter_async_context(KadService(
        host, KadServiceConfig(lookup=LookupConfig(peer_timeout=2.0)), registry=registry))
    if bootstrap:
        await kad.bootstrap([bootstrap])
    names = await stack.enter_async_context(NameService(
        key, KadNameClient(kad), None, NameServiceConfig(naming=naming),
        self_addrs=lambda: tuple(a.to_bytes() for a in host.listen_addrs())))
    return host, names


async def run_api(rounds: int) -> dict[str, Any]:
    naming = NamingConfig(pow_bits=8)
    with tempfile.TemporaryDirectory(prefix="ovl-", dir="/tmp") as tmp:
        async with AsyncExitStack() as stack:
            intro, _ = await _node(stack, naming, None)
            intro_addr = f"{intro.listen_addrs()[0]}/p2p/{intro.peer_id}"
            _, owner = await _node(stack, naming, intro_addr)
            reader_host, reader = await _node(stack, naming, intro_addr)
            for _ in range(3):
                await _node(stack, naming, intro_addr)
            server = await stack.enter_async_context(ApiServer(Path(tmp) / "api.sock"))
            NodeOps(reader_host).register(server)
            NameOps(reader, reader_host, PumpLedger()).register(server)
            await owner.register("bench.ovl", Targets(self_peer=True))
            client = await stack.enter_async_context(await ApiClient.connect(server.path))
            first = await client.call("name_resolve", {"name": "bench.ovl"})
            _log(f"network resolve through the API: {first['elapsed_ms']} ms")

            async def timed(op: str, args: dict[str, Any]) -> list[float]:
                out = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    await client.call(op, args)
                    out.append((time.perf_counter() - t0) * 1000.0)
                return out

            await timed("listen_addrs", {})  # warm-up
            baseline = await timed("listen_addrs", {})
            cached = await timed("name_resolve", {"name": "bench.ovl"})
            inside = (await client.call("name_resolve", {"name": "bench.ovl"}))["elapsed_ms"]
    p50 = statistics.median(cached)
    base = statistics.median(baseline)
    return {
        "api_rounds": rounds,
        "network_resolve_ms": first["elapsed_ms"],
        "cached_resolve_p50_ms": round(p50, 4),
        "cached_resolve_p99_ms": round(percentile(cached, 0.99), 4),
        "cached_resolve_in_daemon_ms": inside,
        "api_baseline_p50_ms": round(base, 4),
        "cached_vs_baseline": round(p50 / base, 2),
        "goal_met": p50 < 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--resolutions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rtt-ms", type=float, default=100.0, help="median per-pair RTT")
    parser.add_argument("--quorum", type=int, default=4)
    parser.add_argument("--adversaries", type=float, default=0.0,
                        help="fraction of nodes serving forged or squatting records")
    parser.add_argument("--api-rounds", type=int, default=2000)
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-api", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if not args.skip_sim:
        result["sim"] = run_sim(args)
    if not args.skip_api:
        result["api"] = asyncio.run(run_api(args.api_rounds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
