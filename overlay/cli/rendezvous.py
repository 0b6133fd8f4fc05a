"""`overlay rendezvous …`: register, unregister and discover under a
namespace at a rendezvous point (an introducer), through the daemon's
``rendezvous_*`` ops.

Exit codes are `overlay`'s: 4 when discover finds nobody under the
namespace (so scripts can tell "nobody there" from "broken"), 2 for a bad
namespace, TTL, limit or point (also when the rendezvous point refuses the
TTL or namespace), 1 when no rendezvous point can be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from overlay.cli.common import (
    EXIT_OK,
    NotFound,
    Parents,
    add_command,
    call_api,
    format_duration,
    plural,
    print_json,
    run_api,
    strip_reply,
)
from overlay.cli.core import peer_id_arg
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home
from overlay.daemon.schema import RENDEZVOUS_LIMIT_MAX, RENDEZVOUS_TTL_MAX, cli_type

__all__ = ["add_rendezvous_parser", "namespace_arg", "point_arg"]

_MAX_TTL = RENDEZVOUS_TTL_MAX
_MAX_LIMIT = RENDEZVOUS_LIMIT_MAX


def namespace_arg(text: str) -> str:
    """argparse type: a namespace of 1 to 255 UTF-8 bytes, no control characters."""
    from overlay.rendezvous.errors import InvalidNamespace
    from overlay.rendezvous.messages import check_namespace

    try:
        return check_namespace(text)
    except InvalidNamespace as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace: {exc}") from None


def point_arg(text: str) -> str:
    """argparse type: a rendezvous point as a QUIC multiaddr (with /p2p) or a peer ID."""
    if not text.startswith("/"):
        return str(peer_id_arg(text))
    from overlay.errors import InvalidMultiaddr
    from overlay.multiaddrs import parse_quic_multiaddr

    parts = text.split("/")
    if len(parts) == 3 and parts[1] in ("p2p", "ipfs"):
        peer_id_arg(parts[2])
        return text
    try:
        parse_quic_multiaddr(text)
    except InvalidMultiaddr as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rendezvous point: {exc}") from None
    return text


def add_rendezvous_parser(sub: Any, parents: Parents) -> None:
    """Add `rendezvous` and its actions to the `overlay` subparsers ``sub``."""
    p = add_command(
        sub, "rendezvous", parents=parents.pick(json=False),
        help="meet peers under a namespace at an introducer (register, discover …)",
        description="Register this node under a namespace at a rendezvous point and "
                    "discover the peers registered there (libp2p rendezvous, "
                    "/rendezvous/1.0.0).  The point is --at, or by default every "
                    "bootstrap peer that serves the protocol (an `overlay daemon "
                    "--introducer`).",
        examples=["overlay rendezvous register my-app", "overlay rendezvous discover my-app"])
    actions = p.add_subparsers(dest="rendezvous_action", metavar="ACTION",
                               parser_class=type(p))
    both = parents.pick()
    at_help = ("the rendezvous point: a multiaddr with /p2p/<id>, or a peer ID "
               "(default: the bootstrap peers that serve rendezvous)")

    a = add_command(
        actions, "register", parents=both, run=_run(_register),
        help="register this node under NS",
        description="Register this node, with a signed record of its addresses, under "
                    "NS.  The daemon re-registers before the TTL ends until `overlay "
                    "rendezvous unregister NS` or until it stops (which withdraws it).  "
                    "Rendezvous points accept TTLs of 2 h to 72 h by default.",
        examples=["overlay rendezvous register my-app",
                  "overlay rendezvous register my-app --ttl 86400 --at /ip4/203.0.113.7/"
                  "udp/4001/quic-v1/p2p/12D3KooW…"])
    a.add_argument("ns", metavar="NS", type=namespace_arg,
                   help="the namespace: 1 to 255 bytes of text")
    a.add_argument("--ttl", metavar="SECONDS", type=cli_type("rendezvous_register", "ttl"), default=None,
                   help=f"registration lifetime (1-{_MAX_TTL}; default: the point's, 2 h)")
    a.add_argument("--at", metavar="PEER", type=point_arg, default=None, help=at_help)

    a = add_command(
        actions, "unregister", parents=both, run=_run(_unregister),
        help="withdraw this node's registration under NS",
        description="Withdraw this node's registration under NS and stop refreshing it.",
        examples=["overlay rendezvous unregister my-app"])
    a.add_argument("ns", metavar="NS", type=namespace_arg, help="the namespace")
    a.add_argument("--at", metavar="PEER", type=point_arg, default=None, help=at_help)

    a = add_command(
        actions, "discover", parents=both, run=_run(_discover),
        help="list the peers registered under NS",
        description="List the peers registered under NS with their addresses (one a "
                    "line); the daemon remembers the addresses, so `overlay connect "
                    "/p2p/<id>` works afterwards.  Without NS, every namespace.  Exits 4 "
                    "if nobody is registered.",
        examples=["overlay rendezvous discover my-app",
                  "overlay rendezvous discover my-app --limit 10 --json"])
    # None, not "": argparse would run the type check on a string default.
    a.add_argument("ns", metavar="NS", type=namespace_arg, nargs="?", default=None,
                   help="the namespace (default: all)")
    a.add_argument("--limit", metavar="N", type=cli_type("rendezvous_discover", "limit"), default=100,
                   help=f"at most N peers per point (1-{_MAX_LIMIT}, default 100)")
    a.add_argument("--cookie", metavar="COOKIE", default=None,
                   help="only registrations newer than a previous --json reply's cookie "
                        "(needs a single point)")
    a.add_argument("--at", metavar="PEER", type=point_arg, default=None, help=at_help)


Action = Callable[[ApiClient, argparse.Namespace], Awaitable[int]]


def _run(action: Action) -> Callable[[argparse.Namespace, Home], int]:
    def run(ns: argparse.Namespace, home: Home) -> int:
        async def body(client: ApiClient) -> int:
            return await action(client, ns)
        return run_api(home, body)
    return run


def _args(ns: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"ns": ns.ns or ""}
    if ns.at is not None:
        args["at"] = ns.at
    args.update({k: v for k, v in extra.items() if v is not None})
    return args


def _report_failures(reply: dict[str, Any]) -> None:
    for failure in reply.get("failed", []):
        print(f"  {failure['point']}: {failure['error']}", file=sys.stderr)


async def _register(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "rendezvous_register", _args(ns, ttl=ns.ttl),
                           waiting="registering", quiet=ns.json)
    if ns.json:
        print_json(strip_reply(reply))
        return EXIT_OK
    for entry in reply["registered"]:
        print(f"registered {ns.ns!r} at {entry['point']} for "
              f"{format_duration(entry['ttl'])} (kept alive until unregistered)")
    _report_failures(reply)
    return EXIT_OK


async def _unregister(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "rendezvous_unregister", _args(ns),
                           waiting="unregistering", quiet=ns.json)
    if ns.json:
        print_json(strip_reply(reply))
        return EXIT_OK
    for point in reply["unregistered"]:
        print(f"unregistered {ns.ns!r} at {point}")
    _report_failures(reply)
    return EXIT_OK


async def _discover(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "rendezvous_discover",
                           _args(ns, limit=ns.limit, cookie=ns.cookie),
                           waiting="asking the rendezvous points", quiet=ns.json)
    peers = reply["peers"]
    if ns.json:
        print_json(strip_reply(reply))
    else:
        for peer in peers:
            addrs = " ".join(peer["addrs"]) or "(no address)"
            mark = "  (this node)" if peer.get("self") else ""
            where = "" if ns.ns else f"[{peer['ns']}] "
            print(f"{where}{peer['peer_id']}  {addrs}{mark}")
        _report_failures(reply)
    if not peers:
        what = f"under {ns.ns!r}" if ns.ns else "in any namespace"
        raise NotFound(f"nobody is registered {what} "
                       f"({plural(len(reply['points']), 'rendezvous point')} asked)")
    return EXIT_OK
