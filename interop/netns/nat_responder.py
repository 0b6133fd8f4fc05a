"""A public UDP responder for measuring a NAT from behind it.

    python nat_responder.py IP [IP...] --ports 3478 3479 [--max-seconds 300]

Listens on every IP × port.  Each datagram is one JSON object with an
``id``; the answer goes back from the socket that got it:

- ``{"op": "map", "id": N}`` → ``{"op": "mapped", "id": N, "addr": [ip, port],
  "via": [ip, port]}``: where the request came from (the NAT's mapping);
- ``{"op": "poke", "id": N, "from": [[ip, port], ...], "to": [ip, port]}``
  → one unsolicited ``{"op": "poke", "from": [ip, port]}`` from each listed
  socket of ours to ``to`` (default: the requester's address), *then*
  ``{"op": "poked", "id": N}`` as an answer.  The answer passes any NAT, and
  follows the pokes along the same path, so whatever poke has not arrived
  before it was filtered;
- ``{"op": "echo", "id": N, ...}`` → the same object back (RTT probes).

Prints ``ready`` once every socket is bound.  Stops on SIGTERM or after
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from collections.abc import Sequence

MAX_DATAGRAM = 2048
MAX_POKES = 16


def _addr(value: object) -> tuple[str, int]:
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str)
            or not isinstance(value[1], int)):
        raise ValueError(f"not an [ip, port]: {value!r}")
    return value[0], value[1]


def serve(sockets: dict[tuple[str, int], socket.socket], max_seconds: float) -> None:
    by_fd = {sock.fileno(): (addr, sock) for addr, sock in sockets.items()}
    end = time.monotonic() + max_seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select(list(by_fd), [], [], left)
        for fd in ready:
            here, sock = by_fd[fd]
            data, peer = sock.recvfrom(MAX_DATAGRAM)
            try:
                request = json.loads(data)
                op = request["op"]
                ident = request.get("id")
                if op == "map":
                    reply = {"op": "mapped", "id": ident, "addr": list(peer), "via": list(here)}
                elif op == "echo":
                    reply = request
                elif op == "poke":
                    target = _addr(request["to"]) if "to" in request else peer
                    for source in request["from"][:MAX_POKES]:
                        poker = sockets.get(_addr(source))
                        if poker is not None:
                            poker.sendto(json.dumps({"op": "poke", "from": list(_addr(source))})
                                         .encode(), target)
                    reply = {"op": "poked", "id": ident}
                else:
                    continue
            except (ValueError, KeyError, TypeError):
                continue  # junk from the lab is not ours to answer
            sock.sendto(json.dumps(reply).encode(), peer)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="nat_responder.py")
    parser.add_argument("ips", nargs="+")
    parser.add_argument("--ports", type=int, nargs="+", required=True)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    sockets: dict[tuple[str, int], socket.socket] = {}
    for ip in args.ips:
        for port in args.ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((ip, port))
            sockets[(ip, port)] = sock
    print("ready", flush=True)
    try:
        serve(sockets, args.max_seconds)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
