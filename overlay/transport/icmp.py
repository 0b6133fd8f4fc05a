"""ICMP errors on an unconnected UDP socket (Linux ``IP_RECVERR``).

A crashed peer's port is closed, and the kernel answers our datagrams to it
with ICMP port-unreachable.  Without ``IP_RECVERR`` Linux drops that news
for unconnected sockets; with it, the error and the datagram that caused
it wait on the socket's error queue, addressed to the original destination.
The endpoint reads them there and fails the matching connection at once
instead of waiting for a timeout.

ICMP is easy to forge off-path, so an error only counts when the quoted
datagram carries the connection ID we send to that peer (RFC 9000 section
14.2.1 asks for such validation).
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Final

__all__ = ["enable_icmp_errors", "read_icmp_errors", "quoted_dcid"]

_IP_RECVERR: Final = 11  # linux/in.h
_IPV6_RECVERR: Final = 25  # linux/in6.h
_QUOTE: Final = 64  # enough of the quoted datagram for any QUIC header's DCID


def enable_icmp_errors(sock: socket.socket, family: socket.AddressFamily) -> bool:
    """Ask for ICMP errors on ``sock``; False where the platform cannot."""
    if not hasattr(socket, "MSG_ERRQUEUE"):
        return False
    level, option = (
        (socket.IPPROTO_IPV6, _IPV6_RECVERR) if family == socket.AF_INET6 else (socket.IPPROTO_IP, _IP_RECVERR)
    )
    try:
        sock.setsockopt(level, option, 1)
    except OSError:
        return False
    return True


def read_icmp_errors(sock: socket.socket) -> list[tuple[tuple[str, int], bytes]]:
    """Drain the error queue: (destination, quoted datagram) of each port
    unreachable.  Other errors (no route, too big) are read and dropped: the
    send path reports those itself.

    The queue must be emptied: while it holds anything the socket polls as
    ready, and the loop would spin.  The socket buffer bounds its length."""
    found: list[tuple[tuple[str, int], bytes]] = []
    while True:
        try:
            data, ancillary, _flags, address = sock.recvmsg(_QUOTE, 512, socket.MSG_ERRQUEUE)
        except OSError:  # EAGAIN: the queue is empty
            break
        for _level, _type, payload in ancillary:
            # struct sock_extended_err starts with the errno (native uint32).
            if len(payload) >= 4 and int.from_bytes(payload[:4], sys.byteorder) == errno.ECONNREFUSED:
                found.append(((str(address[0]), int(address[1])), data))
                break
    return found


def quoted_dcid(data: bytes, length: int) -> bytes | None:
    """The destination connection ID of a quoted QUIC datagram: from the
    header of a long packet, or the first ``length`` bytes after the flags
    of a short one."""
    if not data:
        return None
    if data[0] & 0x80:
        if len(data) < 6:
            return None
        return data[6 : 6 + data[5]]
    return data[1 : 1 + length]
