from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from overlay.errors import DialError, LimitExceeded
from overlay.host import ConnectionManager
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.supervisor import Supervisor

log = logging.getLogger(__name__)


def _peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


@dataclass(eq=False)
class FakeConn:
    remote_peer: PeerId
    is_closed: bool = False
    remote_address: tuple[str, int] = ("127.0.0.1", 1)
    is_initiator: bool = True
    path: str = "direct"
    closed_with: list[str] = field(default_factory=list)


def test_caps_per_peer_and_total() -> None:
    mgr = ConnectionManager(max_connections=3, max_per_peer=2)
    a, b = _peer(), _peer()
    assert mgr.add(FakeConn(a))  # type: ignore[arg-type]
    assert mgr.add(FakeConn(a))  # type: ignore[arg-type]
    assert not mgr.add(FakeConn(a))  # type: ignore[arg-type]
    with pytest.raises(LimitExceeded):
        mgr.check_room(a)
    assert mgr.add(FakeConn(b))  # type: ignore[arg-type]
    assert not mgr.add(FakeConn(_peer()))  # type: ignore[arg-type]
    assert len(mgr) == 3


def test_get_prefers_live_and_prunes_closed() -> None:
    mgr = ConnectionManager(10, 2)
    peer = _peer()
    old, new = FakeConn(peer), FakeConn(peer)
    mgr.add(old)  # type: ignore[arg-type]
    mgr.add(new)  # type: ignore[arg-type]
    assert mgr.get(peer) is old
    old.is_closed = True
    assert mgr.get(peer) is new
    assert len(mgr) == 1
    # A closed connection no longer counts against the per-peer cap.
    assert mgr.add(FakeConn(peer))  # type: ignore[arg-type]


def test_remove_reports_last_connection() -> None:
    mgr = ConnectionManager(10, 2)
    peer = _peer()
    c1, c2 = FakeConn(peer), FakeConn(peer)
    mgr.add(c1)  # type: ignore[arg-type]
    mgr.add(c2)  # type: ignore[arg-type]
    assert not mgr.remove(c1)  # type: ignore[arg-type]
    assert not mgr.remove(c1)  # type: ignore[arg-type]
    assert mgr.remove(c2)  # type: ignore[arg-type]
    assert mgr.peers() == [] and len(mgr) == 0


async def test_dial_is_shared_and_failures_reach_every_waiter() -> None:
    mgr = ConnectionManager(10, 2)
    gate, started = asyncio.Event(), asyncio.Event()
    attempts = 0
    conn = FakeConn(_peer())

    async def attempt() -> FakeConn:
        nonlocal attempts
        attempts += 1
        started.set()
        await gate.wait()
        return conn

    async with asyncio.timeout(5), Supervisor("test", log) as sup:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(mgr.dial("k", attempt, sup))  # type: ignore[arg-type]
                     for _ in range(4)]
            await started.wait()  # the other three ran (and joined) before this wakes
            gate.set()
        assert attempts == 1
        assert all(t.result() is conn for t in tasks)

        async def failing() -> FakeConn:
            await asyncio.sleep(0)  # fail on a later loop turn, as a real dial would
            raise DialError("unreachable")

        results = await asyncio.gather(
            mgr.dial("k", failing, sup), mgr.dial("k", failing, sup),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert all(isinstance(r, DialError) for r in results)


async def test_a_cancelled_dialer_costs_only_itself() -> None:
    # Three callers share one dial; the first is cancelled (its client
    # went away).  The dial goes on and the other two get the connection.
    mgr = ConnectionManager(10, 2)
    started, gate = asyncio.Event(), asyncio.Event()
    conn = FakeConn(_peer())
    attempts = 0

    async def attempt() -> FakeConn:
        nonlocal attempts
        attempts += 1
        started.set()
        await gate.wait()
        return conn

    async with asyncio.timeout(5), Supervisor("test", log) as sup:
        callers = [asyncio.create_task(mgr.dial("k", attempt, sup))  # type: ignore[arg-type]
                   for _ in range(3)]
        await started.wait()  # the other two are queued ahead of this wake-up
        callers[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await callers[0]
        gate.set()
        assert [await callers[1], await callers[2]] == [conn, conn]
        assert attempts == 1


def test_the_per_peer_cap_counts_direct_and_relayed_apart() -> None:
    mgr = ConnectionManager(10, 2)
    peer = _peer()
    relayed = FakeConn(peer, path="relayed")
    assert mgr.add(relayed)  # type: ignore[arg-type]
    # A hole punch's two simultaneous direct connections both fit.
    assert mgr.add(FakeConn(peer))  # type: ignore[arg-type]
    assert mgr.add(FakeConn(peer))  # type: ignore[arg-type]
    assert not mgr.add(FakeConn(peer))  # type: ignore[arg-type]
    assert mgr.has_room(peer, "relayed") and not mgr.has_room(peer)
    # The direct one wins the choice although the relayed one is older.
    assert mgr.get(peer) is not relayed and mgr.get(peer).path == "direct"  # type: ignore[union-attr]
