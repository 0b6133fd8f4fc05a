"""`overlay demo`: a few local nodes connect, ping and identify each other.

Everything runs in this process on 127.0.0.1 with fresh keys and free
ports; nothing is written to disk.  The report is a table per pair; the
return value is True only if every connection, ping and identify worked.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from typing import TextIO

from overlay import AGENT_VERSION
from overlay.errors import OverlayError
from overlay.host.config import HostConfig
from overlay.host.host import Host
from overlay.identity import Ed25519PrivateKey

__all__ = ["PairReport", "NodeReport", "DemoReport", "run_demo", "demo_report", "format_report"]

_LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"


@dataclass(frozen=True, slots=True)
class NodeReport:
    name: str
    peer_id: str
    addr: str


@dataclass(frozen=True, slots=True)
class PairReport:
    """What node ``src`` learned about node ``dst``."""

    src: str
    dst: str
    connected: bool
    rtt_ms: float | None
    agent_version: str | None
    protocols: int
    peer_id_ok: bool
    observed_addr: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.connected and self.rtt_ms is not None and self.peer_id_ok and self.error is None


@dataclass(frozen=True, slots=True)
class DemoReport:
    nodes: tuple[NodeReport, ...]
    pairs: tuple[PairReport, ...]
    connect_ms: float
    total_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.pairs) and all(p.ok for p in self.pairs)


async def _probe(src: Host, dst: Host, names: dict[str, str]) -> PairReport:
    rtt_ms: float | None = None
    try:
        rtt_ms = round(await src.ping(dst.peer_id) * 1000, 3)
        info = await src.identify(dst.peer_id)
    except (OverlayError, TimeoutError) as exc:
        return PairReport(names[str(src.peer_id)], names[str(dst.peer_id)], True, rtt_ms,
                          None, 0, False, None, f"{type(exc).__name__}: {exc}")
    return PairReport(
        names[str(src.peer_id)], names[str(dst.peer_id)], True, rtt_ms,
        info.agent_version, len(info.protocols), info.peer_id == dst.peer_id,
        str(info.observed_addr) if info.observed_addr else None, None)


async def demo_report(node_count: int = 4, timeout: float = 60.0) -> DemoReport:
    """Start ``node_count`` hosts, connect every pair, then ping and identify
    in both directions of every pair."""
    if not 2 <= node_count <= 26:
        raise ValueError("node_count must be between 2 and 26")
    started = time.monotonic()
    async with AsyncExitStack() as stack:
        hosts: list[Host] = []
        for _ in range(node_count):
            host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), HostConfig()))
            await host.listen([_LISTEN])
            hosts.append(host)
        names = {str(h.peer_id): string.ascii_uppercase[i] for i, h in enumerate(hosts)}
        nodes = tuple(NodeReport(names[str(h.peer_id)], str(h.peer_id), str(h.listen_addrs()[0]))
                      for h in hosts)
        dial_errors: dict[tuple[int, int], str] = {}
        connect_ms = 0.0
        pairs: list[PairReport] = []
        try:
            async with asyncio.timeout(timeout):
                t0 = time.monotonic()

                async def dial(i: int, j: int) -> None:
                    target = f"{hosts[j].listen_addrs()[0]}/p2p/{hosts[j].peer_id}"
                    try:
                        await hosts[i].connect(target)
                    except (OverlayError, TimeoutError) as exc:
                        dial_errors[(i, j)] = f"{type(exc).__name__}: {exc}"

                async with asyncio.TaskGroup() as group:
                    for i in range(node_count):
                        for j in range(i + 1, node_count):
                            group.create_task(dial(i, j))
                connect_ms = round((time.monotonic() - t0) * 1000, 1)
                for i, src in enumerate(hosts):
                    for j, dst in enumerate(hosts):
                        if i == j:
                            continue
                        error = dial_errors.get((min(i, j), max(i, j)))
                        if error is not None:
                            pairs.append(PairReport(names[str(src.peer_id)], names[str(dst.peer_id)],
                                                    False, None, None, 0, False, None, error))
                        else:
                            pairs.append(await _probe(src, dst, names))
        except TimeoutError:
            return DemoReport(nodes, tuple(pairs), connect_ms,
                              round((time.monotonic() - started) * 1000, 1),
                              f"the demo did not finish within {timeout:g} s")
        return DemoReport(nodes, tuple(pairs), connect_ms,
                          round((time.monotonic() - started) * 1000, 1))


def format_report(report: DemoReport) -> str:
    lines = [f"overlay demo ({AGENT_VERSION}): {len(report.nodes)} nodes on 127.0.0.1 over QUIC-v1", ""]
    lines.append(f"  {'node':4}  {'peer id':52}  address")
    for node in report.nodes:
        lines.append(f"  {node.name:4}  {node.peer_id:52}  {node.addr}")
    lines.append("")
    connected = sum(1 for p in report.pairs if p.connected) // 2
    lines.append(f"connected {connected} pairs in {report.connect_ms} ms")
    lines.append("")
    lines.append(f"  {'from':4}  {'to':4}  {'ping rtt':>10}  {'agent learned':16}  {'protocols':>9}  result")
    for p in report.pairs:
        rtt = f"{p.rtt_ms:.2f} ms" if p.rtt_ms is not None else "-"
        result = "ok" if p.ok else (p.error or "wrong peer id")
        lines.append(f"  {p.src:4}  {p.dst:4}  {rtt:>10}  {p.agent_version or '-':16}  "
                     f"{p.protocols:>9}  {result}")
    lines.append("")
    good = sum(1 for p in report.pairs if p.ok)
    verdict = "OK" if report.ok else "FAILED"
    lines.append(f"{verdict}: {good}/{len(report.pairs)} pings and identifies succeeded "
                 f"in {report.total_ms} ms" + (f" ({report.error})" if report.error else ""))
    return "\n".join(lines)


async def run_demo(node_count: int, timeout: float, out: TextIO, as_json: bool = False) -> bool:
    report = await demo_report(node_count, timeout)
    if as_json:
        data = {"ok": report.ok, "nodes": [asdict(n) for n in report.nodes],
                "pairs": [dict(asdict(p), ok=p.ok) for p in report.pairs],
                "connect_ms": report.connect_ms, "total_ms": report.total_ms,
                "error": report.error}
        print(json.dumps(data, indent=2), file=out, flush=True)
    else:
        print(format_report(report), file=out, flush=True)
    return report.ok
