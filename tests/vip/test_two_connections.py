"""Two direct connections between the same two hosts, one of them dead at
one end: the vIP answer must come back on the one the question used.

What `overlay demo --nat` saw (p05 sym-random > p08 restricted cone): the
hard side's birthday dial was cancelled once another direct connection
ended the spray, after its handshake had finished; the dialler never
adopted that connection, while the easy side did, as its oldest, so its
host chose it and the echo replies went into a connection nobody at the
other end read (QUIC still acknowledged them).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from overlay.host.events import HostListener
from overlay.host.transport_types import DIRECT, Connection
from overlay.transport.connection import QuicConn
from tests.vip.packets import udp6
from tests.vip.test_service import make_nodes, v6


async def test_the_answer_goes_on_the_connection_the_question_came_on() -> None:
    async with AsyncExitStack() as stack:
        a, b = await make_nodes(stack)
        a.service.router.learn(b.host.peer_id)
        b_seen: asyncio.Queue[Connection] = asyncio.Queue()
        b.host.add_listener(HostListener(opened=b_seen.put_nowait))

        # A connection a's host never adopts: its QUIC side lives and
        # acknowledges, but nothing reads what arrives on it.
        transport = next(t for t in a.host.transports() if t.path == DIRECT)
        dead = await transport.dial(b.host.listen_addrs()[0], b.host.peer_id)
        async with asyncio.timeout(5):
            first = await b_seen.get()
        live = await a.host.connection_to(b.host.peer_id)
        assert live is not dead
        async with asyncio.timeout(5):
            second = await b_seen.get()
        assert a.host.best_connection(b.host.peer_id) is live
        # b's host prefers its oldest: the one a never adopted.
        assert b.host.best_connection(a.host.peer_id) is first
        assert isinstance(first, QuicConn) and isinstance(second, QuicConn)

        question = udp6(v6(a.host.peer_id), v6(b.host.peer_id), b"echo request")
        a.service.from_tun(question)
        assert await b.sink.next() == question
        answer = udp6(v6(b.host.peer_id), v6(a.host.peer_id), b"echo reply")
        b.service.from_tun(answer)
        assert await a.sink.next() == answer
        assert b.service.path_to(a.host.peer_id) == "datagram"
        dead.close(0, "test over")

