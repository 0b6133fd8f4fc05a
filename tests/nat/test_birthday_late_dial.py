"""The hard side's plain dial, cancelled because the session ended (another
direct connection came, or the spray's verdict) just after its handshake
finished: the easy side has adopted that connection, so ours must not be
left unowned (`overlay demo --nat`: p05 sym-random > p08 restricted cone,
whose echo replies went into it and were lost)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from multiaddr import Multiaddr

from overlay.host import Host
from overlay.host.events import HostListener
from overlay.host.transport_types import DIRECT, Connection
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.nat.birthday_core import BirthdayConfig
from overlay.nat.birthday_hard import HardSideDriver

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


class _CancelOnReturn:
    """A's direct transport whose dial, once through, cancels ``victim``
    before handing the connection back: the session's end arriving then."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.path = DIRECT
        self.victim: asyncio.Task[None] | None = None
        self.made: list[Connection] = []

    async def dial(self, addr: Multiaddr, peer: PeerId | None) -> Connection:
        conn: Connection = await self._inner.dial(addr, peer)
        self.made.append(conn)
        assert self.victim is not None
        self.victim.cancel()
        return conn


class _HostView:
    def __init__(self, host: Host, transport: _CancelOnReturn) -> None:
        self._host = host
        self._transport = transport

    def transports(self) -> list[Any]:
        return [self._transport]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)


@dataclass
class _Service:
    host: Any
    config: BirthdayConfig


@dataclass
class _Relayed:
    smoothed_rtt: float = 1.0
    """The second dial would wait this long: it never starts here."""


async def test_a_dial_through_when_the_session_ends_is_adopted_not_leaked() -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        b = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
        await a.listen([LOOPBACK])
        await b.listen([LOOPBACK])
        b_opened: asyncio.Queue[Connection] = asyncio.Queue()
        b.add_listener(HostListener(opened=b_opened.put_nowait))
        direct = next(t for t in a.transports() if t.path == DIRECT)
        transport = _CancelOnReturn(direct)
        driver = HardSideDriver(_Service(_HostView(a, transport),  # type: ignore[arg-type]
                                         BirthdayConfig(allow_private=True)))
        ip, port = b.endpoints()[0].local_address[:2]
        dialled: list[Connection] = []
        task = asyncio.create_task(driver._dial_easy(  # the test owns and awaits it
            b.peer_id, (str(ip), int(port)), dialled, _Relayed()))  # type: ignore[arg-type]
        transport.victim = task
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert len(transport.made) == 1
        conn = transport.made[0]
        async with asyncio.timeout(5):
            await b_opened.get()  # the easy side holds it
        assert not conn.is_closed
        assert a.best_connection(b.peer_id) is conn
        assert a.is_punched(conn)  # our sole direct path
        assert dialled == []
