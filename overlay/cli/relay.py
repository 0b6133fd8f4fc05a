"""`overlay relay status`: circuit relay v2 as the daemon sees it (asks its
``relay_status``): reservations this node holds at relays, the addresses
it advertises through them and, on an introducer, what it relays for
others (reservations, circuits, bytes, refusals by reason)."""

from __future__ import annotations

import argparse
from typing import Any

from overlay.cli.common import (
    EXIT_OK,
    Parents,
    add_command,
    call_api,
    format_duration,
    plural,
    print_json,
    run_api,
    strip_reply,
)
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home

__all__ = ["add_relay_parser"]


def add_relay_parser(sub: Any, parents: Parents) -> None:
    """Add `relay` and its actions to the `overlay` subparsers ``sub``."""
    p = add_command(
        sub, "relay", parents=parents.pick(json=False),
        help="circuit relay v2: reservations held and, on an introducer, relayed traffic",
        description="Circuit relay v2 (/libp2p/circuit/relay/0.2.0): a node behind a NAT "
                    "reserves a slot on a relay (`overlay daemon --relay MULTIADDR`, or "
                    "automatically while it looks private) and is reachable at "
                    "…/p2p/<relay>/p2p-circuit/p2p/<self>.  An `overlay daemon "
                    "--introducer` relays for others under the `relay_limits` of its "
                    "config.",
        examples=["overlay relay status", "overlay relay status --json"])
    actions = p.add_subparsers(dest="relay_action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    add_command(
        actions, "status", parents=parents.pick(), run=_cmd_status,
        help="reservations, advertised circuit addresses, relay counters",
        description="Show the reservations this node holds (relay, expiry, limits), the "
                    "circuit addresses it advertises, and on an introducer the "
                    "reservations it grants, the circuits and bytes it relays and the "
                    "refusals by reason.",
        examples=["overlay relay status", "overlay relay status --json"])


def _cmd_status(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await call_api(client, "relay_status", {}, waiting="asking the relay service",
                               quiet=ns.json)
        if ns.json:
            print_json(strip_reply(reply))
        else:
            _print_status(reply)
        return EXIT_OK

    return run_api(home, body)


def _limit_text(limit: dict[str, Any] | None) -> str:
    if not limit:
        return "unlimited"
    parts = []
    if limit.get("duration_s"):
        parts.append(f"{limit['duration_s']:g} s")
    if limit.get("data_bytes"):
        parts.append(f"{limit['data_bytes']} bytes")
    return " / ".join(parts) or "unlimited"


def _print_status(reply: dict[str, Any]) -> None:
    print(f"reachability: {'private' if reply.get('private') else 'not private'}")
    static = reply.get("static_relays", [])
    print(f"--relay: {', '.join(static) if static else 'none'}")
    reservations = reply.get("reservations", [])
    if not reservations:
        print("reservations: none")
    for entry in reservations:
        print(f"reserved at {entry['relay']}: {format_duration(entry['expires_in_s'])} left, "
              f"circuits {_limit_text(entry.get('limit'))}")
    for addr in reply.get("advertised", []):
        print(f"advertised {addr}")
    for relay, error in sorted(reply.get("errors", {}).items()):
        print(f"relay {relay} failed: {error}")
    print(f"inbound circuits: {reply.get('circuits_accepted', 0)} accepted, "
          f"{reply.get('stop_refused', 0)} refused")
    server = reply.get("server")
    if server is None:
        print("relay service: off (not an introducer)")
        return
    print(f"relay service: {plural(server['reservations_held'], 'reservation')} held "
          f"({server['reservations_granted']} granted, {server['reservations_renewed']} "
          f"renewed), {plural(server['circuits_active'], 'circuit')} open, "
          f"{server['circuits_total']} in all, {plural(server['bytes_relayed'], 'byte')} "
          f"relayed, {server['circuits_cut_by_limit']} cut by a limit")
    limits = server.get("limits", {})
    print(f"limits per circuit: {_limit_text(limits)}")
    refusals = server.get("refusals", {})
    print("refusals: " + (", ".join(f"{k} {v}" for k, v in refusals.items()) or "none"))
    for entry in server.get("reservations", []):
        print(f"  reservation {entry['peer']}: {format_duration(entry['expires_in_s'])} left")
