"""`overlay holepunch status`: DCUtR hole punching as the daemon sees it
(asks its ``holepunch_status``): whether it is on, the sessions running,
the counters, and the latest sessions with how each ended; and re-punching
(the ``repunch`` section of ``stats``): punched paths found dead and punched
again (docs/nat.md, "Keep-alive, re-punch, interface")."""

from __future__ import annotations

import argparse
from typing import Any

from overlay.cli.common import (
    EXIT_OK,
    Parents,
    add_command,
    call_api,
    plural,
    print_json,
    run_api,
    strip_reply,
)
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home

__all__ = ["add_holepunch_parser"]

RECENT_SHOWN = 10
"""Sessions the text output lists (the JSON has all the daemon keeps)."""


def add_holepunch_parser(sub: Any, parents: Parents) -> None:
    """Add `holepunch` and its actions to the `overlay` subparsers ``sub``."""
    p = add_command(
        sub, "holepunch", parents=parents.pick(json=False),
        help="DCUtR hole punching: sessions, counters and how the latest ones ended",
        description="Direct Connection Upgrade through Relay (/libp2p/dcutr): when a peer "
                    "reaches this node through a relay, both sides try to open a direct "
                    "connection through their NATs; new streams then use it.  On by "
                    "default; `overlay daemon --no-holepunch` turns it off.",
        examples=["overlay holepunch status", "overlay holepunch status --json"])
    actions = p.add_subparsers(dest="holepunch_action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    add_command(
        actions, "status", parents=parents.pick(), run=_cmd_status,
        help="whether hole punching is on, sessions running, counters, latest outcomes",
        description="Show whether hole punching is on, the peers with a session running, "
                    "the counters (sessions, punched, failed, refused …) and the latest "
                    "sessions: the peer, our role, the outcome and how long it took.",
        examples=["overlay holepunch status", "overlay holepunch status --json"])


def _cmd_status(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await call_api(client, "holepunch_status", {},
                               waiting="asking the hole punching service", quiet=ns.json)
        stats = await call_api(client, "stats", {}, waiting="asking for the re-punch counters",
                               quiet=True)
        reply = {**reply, "repunch": stats.get("repunch")}
        if ns.json:
            print_json(strip_reply(reply))
        else:
            print_status(reply)
        return EXIT_OK

    return run_api(home, body)


def print_status(reply: dict[str, Any]) -> None:
    if not reply.get("enabled"):
        print("hole punching: off (the daemon runs with --no-holepunch, or `holepunch = false`)")
        return
    active = reply.get("active", [])
    print(f"hole punching: on, {plural(len(active), 'session')} running")
    for peer in active:
        print(f"  running with {peer}")
    counters = reply.get("counters", {})
    if counters:
        print("counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    repunch = reply.get("repunch")
    if repunch:
        print(f"re-punch: watching {plural(int(repunch.get('watching', 0)), 'punched path')} "
              f"({repunch.get('busy', 0)} in use); dead {repunch.get('dead', 0)}, re-punched "
              f"{repunch.get('repunches', 0)} (+{repunch.get('peer_redialled', 0)} by the peer), "
              f"direct again {repunch.get('direct_again', 0)}, still relayed "
              f"{repunch.get('still_relayed', 0)}, QUIC migrations "
              f"{repunch.get('migrated', 0)} (`overlay peers --json`: per peer)")
    recent = reply.get("recent", [])
    if not recent:
        print("no session yet")
        return
    print(f"latest {min(len(recent), RECENT_SHOWN)} of {len(recent)}:")
    for entry in recent[-RECENT_SHOWN:]:
        verdict = "direct" if entry.get("ok") else "relayed"
        took = entry.get("elapsed_ms")
        rtt = entry.get("rtt_ms")
        extra = []
        if took is not None:
            extra.append(f"{took:.0f} ms")
        if rtt is not None:
            extra.append(f"relayed RTT {rtt:.0f} ms")
        if entry.get("attempts"):
            extra.append(plural(int(entry["attempts"]), "attempt"))
        print(f"  {entry.get('peer')} ({entry.get('role')}): {verdict}, {entry.get('how')}"
              + (f" [{', '.join(extra)}]" if extra else ""))
