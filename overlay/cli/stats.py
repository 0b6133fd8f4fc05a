"""`overlay stats`: the limits remote peers and local clients hit, by
cause, and the counters around them (asks the daemon's ``stats`` op; the
same figures are served to Prometheus by `overlay daemon --metrics`)."""

from __future__ import annotations

import argparse
from typing import Any

from overlay.cli.common import EXIT_OK, Parents, add_command, call_api, print_json, run_api, strip_reply
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home

__all__ = ["add_stats_parser", "format_stats"]


def add_stats_parser(sub: Any, parents: Parents) -> None:
    """Add `stats` to the `overlay` subparsers ``sub``."""
    add_command(
        sub, "stats", parents=parents.pick(), run=_cmd_stats,
        help="limits hit by cause (kad streams, DNS, API clients, exit) and counters",
        description="Show how often each limit was hit since the daemon started (inbound "
                    "kad streams per peer, per source and in total; DNS queries per "
                    "source, TCP clients, pending names; API clients evicted or timed "
                    "out; an exit's refusals and per-client limits), with the kad, DNS, "
                    "API and exit counters around them.",
        examples=["overlay stats", "overlay stats --json"])


def _cmd_stats(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await call_api(client, "stats", {}, waiting="asking for counters", quiet=ns.json)
        if ns.json:
            print_json(strip_reply(reply))
        else:
            _print(reply)
        return EXIT_OK

    return run_api(home, body)


def _print(reply: dict[str, Any]) -> None:
    for line in format_stats(reply):
        print(line)


def format_stats(reply: dict[str, Any]) -> list[str]:
    """The text form of a ``stats`` reply, one line per list item."""
    lines: list[str] = []
    limits = reply.get("limits", {})
    if limits:
        lines.append("limits hit:")
        lines.extend(f"  {cause}: {count}" for cause, count in limits.items())
    else:
        lines.append("limits hit: none")
    for section in ("kad", "dns", "api"):
        values = reply.get(section)
        if values:
            lines.append(f"{section}: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                     for k, v in values.items()))
    exit_stats = reply.get("exit")
    if exit_stats:
        lines.extend(_exit_lines(exit_stats))
    return lines


def _exit_lines(values: dict[str, Any]) -> list[str]:
    """The exit's counters (docs/apps.md, "Limits and stats"): flat figures
    on one line, then refusals by status and one line per client."""
    flat = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items()
                     if isinstance(v, int))
    ports = ",".join(str(p) for p in values.get("ports", []))
    lines = [f"exit: {flat}" + (f", ports {ports}" if ports else "")]
    refused = values.get("refused") or {}
    lines.append("  refused: " + (", ".join(f"{k.replace('_', ' ')} {v}"
                                            for k, v in refused.items()) or "none"))
    for peer, client in sorted((values.get("clients") or {}).items()):
        lines.append(f"  client {peer}: " + ", ".join(f"{k} {v}" for k, v in client.items()))
    return lines
