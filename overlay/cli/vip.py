"""`overlay vip status`: the virtual-IP interface as the daemon sees it
(asks its ``vip_status``): the interface and this node's addresses, the
peers with their vIPs and the path packets take to each, and the packet,
byte and drop counters.  A daemon without ``--tun`` has no such op; the
command then says the interface is off."""

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
from overlay.daemon.errors import ApiError
from overlay.daemon.home import Home
from overlay.daemon.protocol import ErrorCode

__all__ = ["add_vip_parser", "print_status"]

PEERS_SHOWN = 50
"""Peers the text output lists (the JSON has all the daemon returns)."""


def add_vip_parser(sub: Any, parents: Parents) -> None:
    """Add `vip` and its actions to the `overlay` subparsers ``sub``."""
    p = add_command(
        sub, "vip", parents=parents.pick(json=False),
        help="virtual IPs (overlay daemon --tun): addresses, peers, paths, counters",
        description="With `overlay daemon --tun` the interface ovl0 gives every peer an "
                    "IPv6 address derived from its peer ID (fd4f:766c:3000::/48) and an "
                    "IPv4 address from 100.64.0.0/10 handed out on demand; packets go to "
                    "the peer as QUIC datagrams, or on a stream when datagrams cannot "
                    "carry them (docs/vip.md).",
        examples=["overlay vip status", "overlay vip status --json"])
    actions = p.add_subparsers(dest="vip_action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    add_command(
        actions, "status", parents=parents.pick(), run=_cmd_status,
        help="the interface, our vIPs, each peer's vIPs and path, packets, bytes, drops",
        description="Show the interface and this node's vIPv4 and vIPv6, the peers (connected "
                    "ones first, then those holding an IPv4 address) with their vIPs and "
                    "whether packets to them go as datagrams, on a stream, or need a dial "
                    "first, and the packet, byte and drop counters (forged sources, full "
                    "queues …).",
        examples=["overlay vip status", "overlay vip status --json"])


def _cmd_status(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        try:
            reply = await call_api(client, "vip_status", {},
                                   waiting="asking the virtual-IP service", quiet=ns.json)
        except ApiError as exc:
            if exc.code != ErrorCode.UNKNOWN_OP:
                raise
            reply = {"running": False}  # a daemon without --tun has no such op
        if ns.json:
            print_json(strip_reply(reply))
        else:
            print_status(reply)
        return EXIT_OK

    return run_api(home, body)


def print_status(reply: dict[str, Any]) -> None:
    if not reply.get("running"):
        print("virtual IPs: off (the daemon runs without --tun, or `tun = false`)")
        return
    print(f"interface {reply.get('interface')}: {reply.get('vip4')} and {reply.get('vip6')}")
    peers = reply.get("peers", [])
    total = int(reply.get("peers_total", len(peers)))
    print(f"{plural(total, 'peer')}, {reply.get('vip4_table', 0)} holding an IPv4 address")
    for peer in peers[:PEERS_SHOWN]:
        print(f"  {peer.get('peer_id')}  {peer.get('vip4') or '-':<15}  {peer.get('vip6')}"
              f"  {peer.get('path')}")
    if total > min(len(peers), PEERS_SHOWN):
        print(f"  … {total - min(len(peers), PEERS_SHOWN)} more (--json lists "
              f"{len(peers)})")
    packets = reply.get("packets", {})
    sent = packets.get("datagram_out", 0) + packets.get("stream_out", 0)
    received = packets.get("datagram_in", 0) + packets.get("stream_in", 0)
    octets = reply.get("bytes", {})
    print(f"sent: {plural(sent, 'packet')}, {octets.get('out', 0)} bytes "
          f"({packets.get('datagram_out', 0)} as datagrams, "
          f"{packets.get('stream_out', 0)} on streams)")
    print(f"received: {plural(received, 'packet')} "
          f"({packets.get('datagram_in', 0)} as datagrams, "
          f"{packets.get('stream_in', 0)} on streams), "
          f"{packets.get('delivered', 0)} delivered, {octets.get('in', 0)} bytes")
    drops = reply.get("drops", {})
    if drops:
        print("dropped: " + ", ".join(f"{reason} {count}"
                                      for reason, count in sorted(drops.items())))
    else:
        print("dropped: none")
