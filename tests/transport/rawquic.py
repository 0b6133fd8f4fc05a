"""Bare aioquic clients on raw UDP sockets: Initials that never complete,
forged tokens, attackers that do or do not answer a Retry."""

from __future__ import annotations

import asyncio
import socket
import time

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicHeader, QuicPacketType, pull_quic_header


def udp_socket(ip: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((ip, 0))
    sock.setblocking(False)
    return sock


def header_of(datagram: bytes) -> QuicHeader:
    return pull_quic_header(Buffer(data=datagram), host_cid_length=8)


class RawClient:
    """One client connection driven by hand over ``sock``."""

    def __init__(self, sock: socket.socket, target: tuple[str, int], token: bytes = b"") -> None:
        """``token`` goes in the first Initial, as one a server once sent
        in NEW_TOKEN would."""
        self.sock = sock
        self.target = target
        self.quic = QuicConnection(
            configuration=QuicConfiguration(alpn_protocols=["libp2p"], is_client=True,
                                            token=token)
        )
        self.quic.connect(target, now=time.monotonic())

    def pending(self) -> list[bytes]:
        return [data for data, _ in self.quic.datagrams_to_send(now=time.monotonic())]

    async def flush(self) -> list[bytes]:
        """Send what the client has to send; returns those datagrams."""
        loop = asyncio.get_running_loop()
        sent = self.pending()
        for data in sent:
            await loop.sock_sendto(self.sock, data, self.target)
        return sent

    def feed(self, data: bytes) -> None:
        self.quic.receive_datagram(data, self.target, now=time.monotonic())

    def terminated(self) -> events.ConnectionTerminated | None:
        """The close the peer sent, if any.  aioquic reports it as an event
        only after the draining period, a timer away; it records it at once
        (a private attribute, fine for a test)."""
        event: events.ConnectionTerminated | None = self.quic._close_event
        return event


async def receive(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data, _ = await loop.sock_recvfrom(sock, 65535)
    return data


async def receive_type(sock: socket.socket, wanted: QuicPacketType) -> bytes:
    """The next datagram whose first packet is of type ``wanted``."""
    while True:
        data = await receive(sock)
        if header_of(data).packet_type is wanted:
            return data
