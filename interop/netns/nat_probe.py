"""Measure the NAT in front of this host with plain UDP sockets, against a
``nat_responder.py`` that listens on two IPs × two ports.

    python nat_probe.py behaviour LOCAL_IP IP1 IP2 PORT1 PORT2
    python nat_probe.py rtt LOCAL_IP IP PORT [--count 20]
    python nat_probe.py punch LOCAL_IP LOCAL_PORT PEER_IP PEER_PORT [--start-after S]

``behaviour`` prints one JSON line:

- ``local``: the port of socket S; ``mapped``: ``"ip:port"`` of each server
  → the address it saw S at, asked in the order (IP1, PORT1), (IP1, PORT2),
  (IP2, PORT1), (IP2, PORT2) — each a new flow through the NAT;
- ``pokes``: the servers whose unsolicited packet reached S after S had
  sent to (IP1, PORT1) only (asked before the other three flows exist);
- ``unsolicited_first``: a fresh socket is first poked at
  ``<public ip>:<its own port>`` from (IP2, PORT2), then sends there
  itself; ``local``, ``mapped`` (what the server saw) and ``poked``
  (whether the early packet got in).  A NAT whose port preservation
  survives the early packet keeps ``mapped`` at the local port.

``rtt`` prints ``{"rtt_ms": [...], "lost": N}``: sequential echo round trips.
``punch`` prints ``{"sent": N, "received": N, "from": [...]}``: a bare
UDP hole punch towards a peer's public address.
"""

from __future__ import annotations

import argparse
import itertools
import json
import select
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

RETRY = 0.25
DEADLINE = 8.0
MAX_DATAGRAM = 2048
_ids = itertools.count(1)


def _fmt(addr: Sequence[object]) -> str:
    return f"{addr[0]}:{addr[1]}"


class Probe:
    def __init__(self, local_ip: str) -> None:
        self.local_ip = local_ip
        self.pokes: dict[int, list[str]] = {}
        """Socket port → sources of the pokes it received."""

    def open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.local_ip, 0))
        self.pokes[sock.getsockname()[1]] = []
        return sock

    def _note(self, sock: socket.socket, message: Any) -> None:
        if isinstance(message, dict) and message.get("op") == "poke":
            self.pokes[sock.getsockname()[1]].append(_fmt(message["from"]))

    def request(self, sock: socket.socket, server: tuple[str, int],
                message: dict[str, object]) -> dict[str, Any]:
        """Send until the answer with our id comes back (bounded); pokes
        that arrive meanwhile are noted."""
        ident = next(_ids)
        data = json.dumps({**message, "id": ident}).encode()
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            sock.sendto(data, server)
            resend = min(end, time.monotonic() + RETRY)
            while (left := resend - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                reply = json.loads(sock.recv(MAX_DATAGRAM))
                if isinstance(reply, dict) and reply.get("id") == ident:
                    return reply
                self._note(sock, reply)
        raise TimeoutError(f"no answer from {_fmt(server)} to {message['op']}")

    def drain(self, sock: socket.socket) -> None:
        """Note what is already queued, without waiting."""
        while select.select([sock], [], [], 0)[0]:
            self._note(sock, json.loads(sock.recv(MAX_DATAGRAM)))


def behaviour(local_ip: str, ip1: str, ip2: str, port1: int, port2: int) -> dict[str, object]:
    servers = [(ip1, port1), (ip1, port2), (ip2, port1), (ip2, port2)]
    probe = Probe(local_ip)
    s = probe.open_socket()
    local = s.getsockname()[1]
    mapped: dict[str, str] = {}
    first = probe.request(s, servers[0], {"op": "map"})
    mapped[_fmt(servers[0])] = _fmt(first["addr"])
    # The answer to the poke request trails the pokes on the same path.
    probe.request(s, servers[0], {"op": "poke", "from": [list(a) for a in servers[1:]]})
    probe.drain(s)
    pokes = sorted(set(probe.pokes[local]))
    for server in servers[1:]:
        mapped[_fmt(server)] = _fmt(probe.request(s, server, {"op": "map"})["addr"])
    public_ip = first["addr"][0]
    late = probe.open_socket()
    late_port = late.getsockname()[1]
    probe.request(s, servers[0], {"op": "poke", "from": [list(servers[3])],
                                  "to": [public_ip, late_port]})
    probe.drain(late)
    poked = bool(probe.pokes[late_port])
    late_mapped = probe.request(late, servers[3], {"op": "map"})["addr"]
    return {"local": local, "mapped": mapped, "pokes": pokes,
            "unsolicited_first": {"local": late_port, "mapped": _fmt(late_mapped),
                                  "poked": poked}}


def rtt(local_ip: str, ip: str, port: int, count: int) -> dict[str, object]:
    probe = Probe(local_ip)
    s = probe.open_socket()
    samples: list[float] = []
    lost = 0
    for _ in range(count):
        ident = next(_ids)
        start = time.monotonic()
        s.sendto(json.dumps({"op": "echo", "id": ident}).encode(), (ip, port))
        end = start + 1.0
        answered = False
        while not answered and (left := end - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            reply = json.loads(s.recv(MAX_DATAGRAM))
            if isinstance(reply, dict) and reply.get("id") == ident:
                samples.append((time.monotonic() - start) * 1000)
                answered = True
        lost += not answered
    return {"rtt_ms": [round(x, 3) for x in samples], "lost": lost}


def punch(local_ip: str, local_port: int, peer_ip: str, peer_port: int, start_after: float,
          seconds: float) -> dict[str, object]:
    """Wait ``start_after`` s, then send to the peer every 50 ms for
    ``seconds``, counting what the peer sent us (a bare UDP hole punch)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((local_ip, local_port))
    received = sent = 0
    sources: set[str] = set()
    start = time.monotonic() + start_after
    while (left := start - time.monotonic()) > 0:
        if select.select([s], [], [], left)[0]:
            data, peer = s.recvfrom(MAX_DATAGRAM)
            received += data == b"punch"
            sources.add(_fmt(peer))
    end = time.monotonic() + seconds
    next_send = time.monotonic()
    while (now := time.monotonic()) < end:
        if now >= next_send:
            s.sendto(b"punch", (peer_ip, peer_port))
            sent += 1
            next_send = now + 0.05
        if select.select([s], [], [], max(0.0, min(next_send, end) - time.monotonic()))[0]:
            data, peer = s.recvfrom(MAX_DATAGRAM)
            received += data == b"punch"
            sources.add(_fmt(peer))
    return {"sent": sent, "received": received, "from": sorted(sources)}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="nat_probe.py")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("behaviour")
    b.add_argument("local_ip")
    b.add_argument("ip1")
    b.add_argument("ip2")
    b.add_argument("port1", type=int)
    b.add_argument("port2", type=int)
    r = sub.add_parser("rtt")
    r.add_argument("local_ip")
    r.add_argument("ip")
    r.add_argument("port", type=int)
    r.add_argument("--count", type=int, default=20)
    h = sub.add_parser("punch")
    h.add_argument("local_ip")
    h.add_argument("local_port", type=int)
    h.add_argument("peer_ip")
    h.add_argument("peer_port", type=int)
    h.add_argument("--start-after", type=float, default=0.0)
    h.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args(argv)
    if args.command == "behaviour":
        result = behaviour(args.local_ip, args.ip1, args.ip2, args.port1, args.port2)
    elif args.command == "punch":
        result = punch(args.local_ip, args.local_port, args.peer_ip, args.peer_port,
                       min(max(args.start_after, 0.0), 10.0), min(max(args.seconds, 0.1), 30.0))
    else:
        result = rtt(args.local_ip, args.ip, args.port, min(max(args.count, 1), 10_000))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
