"""`overlay stats`: the limits remote peers and local clients hit, by
cause, and the counters around them (asks the daemon's ``stats`` op; the
same figures are served to Prometheus by `overlay daemon --metrics`)."""

from __future__ import annotations

import argparse
from typing import Any

from overlay.cli_common import EXIT_OK, Parents, add_command, call_api, print_json, run_api, strip_reply
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home

__all__ = ["add_stats_parser"]


def add_stats_parser(sub: Any, parents: Parents) -> None:
    """Add `stats` to the `overlay` subparsers ``sub``."""
    add_command(
        sub, "stats", parents=parents.pick(), run=_cmd_stats,
        help="limits hit by cause (kad streams, DNS, API clients) and counters",
        description="Show how often each limit was hit since the daemon started (inbound "
                    "kad streams per peer, per source and in total; DNS queries per "
                    "source, TCP clients, pending names; API clients evicted or timed "
                    "out), with the kad, DNS and API counters around them.",
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
    limits = reply.get("limits", {})
    if limits:
        print("limits hit:")
        for cause, count in limits.items():
            print(f"  {cause}: {count}")
    else:
        print("limits hit: none")
    for section in ("kad", "dns", "api"):
        values = reply.get(section)
        if values:
            print(f"{section}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items()))
