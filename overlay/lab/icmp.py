"""ICMP echo from inside a lab namespace, without the `ping` binary (the
lab does not assume iputils):

    python -m overlay.lab.icmp ADDRESS [--count 3] [--wait 2]

prints one JSON line ``{"address", "sent", "received", "rtts_ms"}`` and
exits 0 (also when nothing came back: the caller judges), 2 on a bad
argument.  It needs a raw socket (root).  Every echo waits at most
``--wait`` seconds for its reply, so a run is bounded by count × wait.

The demo uses it to send real packets to a peer's virtual IP: they go into
``ovl0`` and across the overlay connection to that peer, whose kernel
answers.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence

__all__ = ["echo", "main"]

_PAYLOAD = b"overlay-lab-echo"
_ECHO_REQUEST = {4: 8, 6: 128}
_ECHO_REPLY = {4: 0, 6: 129}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def echo(address: str, count: int, wait: float) -> list[float]:
    """Send ``count`` echo requests one after another to ``address``; the
    round-trip times in ms of those answered within ``wait`` seconds."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if ip.version == 6 else socket.IPPROTO_ICMP
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        for seq in range(count):
            body = struct.pack("!HH", ident, seq) + _PAYLOAD
            head = struct.pack("!BBH", _ECHO_REQUEST[ip.version], 0, 0)
            if ip.version == 4:
                # The kernel fills in ICMPv6 checksums (they cover the IPv6
                # pseudo-header), not ICMPv4 ones.
                head = struct.pack("!BBH", _ECHO_REQUEST[4], 0, _checksum(head + body))
            started = time.monotonic()
            sock.sendto(head + body, (address, 0))
            deadline = started + wait
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    break
                if ip.version == 4:  # a raw IPv4 socket hands over the IP header too
                    data = data[(data[0] & 0x0F) * 4:]
                if data[:1] == bytes([_ECHO_REPLY[ip.version]]) and data[4:8] == body[:4]:
                    rtts.append(round((time.monotonic() - started) * 1000, 3))
                    break
    return rtts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m overlay.lab.icmp",
                                     description="ICMP echo, one JSON line of results.")
    parser.add_argument("address", type=ipaddress.ip_address)
    parser.add_argument("--count", type=int, default=3, choices=range(1, 101),
                        metavar="1..100")
    parser.add_argument("--wait", type=float, default=2.0,
                        help="seconds to wait for each reply (default 2)")
    args = parser.parse_args(argv)
    if not 0 < args.wait <= 30:
        parser.error("--wait must be in (0, 30]")
    try:
        rtts = echo(str(args.address), args.count, args.wait)
    except OSError as exc:
        print(f"icmp: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"address": str(args.address), "sent": args.count,
                      "received": len(rtts), "rtts_ms": rtts}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
