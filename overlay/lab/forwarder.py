"""The frame forwarder of a delayed lab link (``overlay.lab.delay``), run
as a program in the link's middle namespace:

    python -m overlay.lab.forwarder forward A_IF B_IF --delay-ms 20 [--loss 0.01 --seed 1]
    python -m overlay.lab.forwarder offload-off IF [IF...]

It reads every frame from one side with an AF_PACKET socket, holds it for
the delay in a FIFO and writes it to the other side, dropping a seeded
random share of frames for loss.  ``forward`` prints ``ready`` once both
sockets are bound, and one JSON line of counters when SIGTERM stops it.
It exits by itself after ``--max-seconds``.

A module of its own, which the package does not import, so that
``python -m`` runs it once.

Checksum offloads have to be off on the two ends that send into the
forwarder: with them on, a veth hands on frames whose UDP/TCP checksum is
still to be filled in, and a packet socket would copy them out that way.
``offload_off`` turns them off through the ``SIOCETHTOOL`` ioctl (what
``ethtool -K IF tx off rx off gso off tso off gro off`` does), so the lab
needs no ``ethtool``.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import fcntl
import json
import math
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from overlay.lab.delay import DEFAULT_MAX_SECONDS

__all__ = ["forward", "main", "offload_off"]

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SIOCETHTOOL = 0x8946
# (get, set) ethtool commands: tx and rx checksum, scatter-gather is left
# alone; TSO, GSO and GRO so that no frame exceeds the MTU.
_OFFLOADS = {
    "tx": (0x16, 0x17),
    "rx": (0x14, 0x15),
    "tso": (0x1E, 0x1F),
    "gso": (0x23, 0x24),
    "gro": (0x2B, 0x2C),
}
MAX_FRAME = 65536
RCVBUF = 4 * 1024 * 1024
DEFAULT_QUEUE = 20000
"""Frames held per direction before new ones are dropped (a router's
buffer): bounds memory at a few tens of MB."""
BATCH = 512
"""Frames read from one socket per loop turn, so one busy direction
cannot starve the other's timely release."""


def _ethtool(sock: socket.socket, ifname: str, cmd: int, value: int = 0) -> int:
    buf = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(40, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return int(struct.unpack("II", buf.raw[:8])[1])


def offload_off(ifname: str) -> dict[str, int]:
    """Turn checksum and segmentation offloads off on ``ifname`` (in this
    process's namespace); return each feature's state afterwards (0 off).

    Raises ``OSError`` if transmit checksumming is still on: that one
    matters (module doc); the others may be fixed by the device.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name, (_, set_cmd) in _OFFLOADS.items():
            try:
                _ethtool(sock, ifname, set_cmd, 0)
            except OSError:
                if name == "tx":
                    raise
        state = {name: _ethtool(sock, ifname, get_cmd) for name, (get_cmd, _) in _OFFLOADS.items()}
    if state["tx"]:
        raise OSError(f"{ifname}: transmit checksum offload is still on")
    return state


@dataclass(slots=True)
class _Direction:
    name: str
    rx: socket.socket
    tx: socket.socket
    delay: float
    queue: collections.deque[tuple[float, bytes]]
    forwarded: int = 0
    lost: int = 0
    overflow: int = 0
    send_errors: int = 0


def _open(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
    try:
        # Not our own transmissions back (kernel 4.20+); the pkttype check
        # below covers older kernels.
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class _Stop(Exception):
    pass


def _on_term(signum: int, frame: object) -> None:
    raise _Stop


def forward(a_if: str, b_if: str, delay_ab: float, delay_ba: float, loss: float, seed: int,
            queue_limit: int, max_seconds: float) -> dict[str, dict[str, int]]:
    """Forward frames both ways until SIGTERM or ``max_seconds``."""
    rng = random.Random(seed)
    for ifname in (a_if, b_if):
        offload_off(ifname)
    sa, sb = _open(a_if), _open(b_if)
    directions = [_Direction("a>b", sa, sb, delay_ab, collections.deque()),
                  _Direction("b>a", sb, sa, delay_ba, collections.deque())]
    by_fd = {d.rx.fileno(): d for d in directions}
    end = time.monotonic() + max_seconds
    signal.signal(signal.SIGTERM, _on_term)
    print("ready", flush=True)
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            wake = end
            for d in directions:
                queue = d.queue
                while queue and queue[0][0] <= now:
                    frame = queue.popleft()[1]
                    try:
                        d.tx.send(frame)
                        d.forwarded += 1
                    except OSError:
                        d.send_errors += 1
                if queue:
                    wake = min(wake, queue[0][0])
            ready, _, _ = select.select(list(by_fd), [], [], max(0.0, wake - now))
            now = time.monotonic()
            for fd in ready:
                d = by_fd[fd]
                for _ in range(BATCH):
                    try:
                        frame, addr = d.rx.recvfrom(MAX_FRAME)
                    except BlockingIOError:
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    if loss and rng.random() < loss:
                        d.lost += 1
                    elif len(d.queue) >= queue_limit:
                        d.overflow += 1
                    else:
                        d.queue.append((now + d.delay, frame))
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sa.close()
        sb.close()
    return {d.name: {"forwarded": d.forwarded, "lost": d.lost, "overflow": d.overflow,
                     "send_errors": d.send_errors, "queued": len(d.queue)}
            for d in directions}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m overlay.lab.forwarder",
                                     description="Delay and loss on a lab link, in user space.")
    sub = parser.add_subparsers(dest="command", required=True)
    fwd = sub.add_parser("forward", help="forward frames between two interfaces")
    fwd.add_argument("a_if")
    fwd.add_argument("b_if")
    fwd.add_argument("--delay-ms", type=float, default=0.0, help="one way, each direction")
    fwd.add_argument("--delay-ms-back", type=float, default=None,
                     help="b to a, when it differs from --delay-ms")
    fwd.add_argument("--loss", type=float, default=0.0, help="share of frames dropped, 0..1")
    fwd.add_argument("--seed", type=int, default=0)
    fwd.add_argument("--queue", type=int, default=DEFAULT_QUEUE)
    fwd.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    off = sub.add_parser("offload-off", help="turn checksum/segmentation offloads off")
    off.add_argument("ifnames", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "offload-off":
        for ifname in args.ifnames:
            print(ifname, json.dumps(offload_off(ifname)), flush=True)
        return 0
    back = args.delay_ms if args.delay_ms_back is None else args.delay_ms_back
    for value in (args.delay_ms, back):
        if not (math.isfinite(value) and 0 <= value <= 10_000):
            parser.error("delays must be 0..10000 ms")
    if not 0 <= args.loss < 1:
        parser.error("--loss must be in [0, 1)")
    counters = forward(args.a_if, args.b_if, args.delay_ms / 1000, back / 1000, args.loss,
                       args.seed, args.queue, args.max_seconds)
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
