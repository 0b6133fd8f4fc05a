"""The IPv4 table survives a restart: the allocator's restore, the file's
checks, and a daemon stopped and started again on the same home."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.host import Host
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.statefile import CorruptState, encode_state
from overlay.transport.connection import QuicConn
from overlay.vip import SELF_V4, Ipv4Allocator, Ipv4AllocatorConfig, vip6_of
from overlay.vip.daemon_ext import VipExtension
from overlay.vip.persist import (
    MAX_TABLE_BYTES,
    TABLE_FILE,
    TABLE_FORMAT,
    TABLE_VERSION,
    decode_table,
    load_table,
    table_body,
)
from tests.vip.packets import udp4

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
FIRST = int(ipaddress.IPv4Address("100.64.0.2"))


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


# -- pure: the allocator and the document ------------------------------------------

def test_restore_keeps_addresses_and_order_and_numbers_after_them() -> None:
    old = Ipv4Allocator()
    peers = [new_peer() for _ in range(3)]
    for i, peer in enumerate(peers):
        old.allocate(peer, float(i))
    old.touch(peers[0], 10.0)  # now the most recently used
    saved = decode_table(json.loads(json.dumps(table_body(old.entries()))))
    assert [p for p, _ in saved] == [peers[1], peers[2], peers[0]]

    new = Ipv4Allocator()
    assert new.restore(saved, 100.0) == 3
    for peer in peers:
        assert new.lookup(peer) == old.lookup(peer)
    # A new peer gets the next address, not one a cached A record still names.
    assert new.allocate(new_peer(), 100.0) == ipaddress.IPv4Address(FIRST + 3)


def test_restore_keeps_the_most_recent_and_skips_what_does_not_fit() -> None:
    a, b, c, d, e, f = (new_peer() for _ in range(6))
    saved = [(f, FIRST + 5), (a, FIRST), (b, FIRST), (a, FIRST + 1), (c, 1), (d, FIRST + 5),
             (e, FIRST + 6)]
    alloc = Ipv4Allocator(Ipv4AllocatorConfig(max_entries=5))
    # c is outside the pool; a's older entry and f's address (d holds it
    # later) lose to the more recent ones.
    assert alloc.restore(saved, 0.0) == 4
    assert [(p, alloc.lookup(p)) for p in (a, b, c, d, e, f)] == [
        (a, ipaddress.IPv4Address(FIRST + 1)), (b, ipaddress.IPv4Address(FIRST)), (c, None),
        (d, ipaddress.IPv4Address(FIRST + 5)), (e, ipaddress.IPv4Address(FIRST + 6)),
        (f, None)]
    assert [p for p, _ in alloc.entries()] == [b, a, d, e]  # the order kept
    # A smaller table keeps the most recently used.
    small = Ipv4Allocator(Ipv4AllocatorConfig(max_entries=2))
    assert small.restore(saved, 0.0) == 2
    assert [p for p, _ in small.entries()] == [d, e]


def test_a_change_is_reported_but_a_use_is_not() -> None:
    alloc = Ipv4Allocator()
    changes: list[int] = []
    alloc.on_change = lambda: changes.append(len(alloc))
    peer = new_peer()
    alloc.allocate(peer, 0.0)
    alloc.allocate(peer, 1.0)
    alloc.touch(peer, 2.0)
    assert changes == [1]


@pytest.mark.parametrize("entries", [
    "not a list",
    [["12D3KooW", "100.64.0.2"]],
    [[str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())), "192.0.2.1"]],
    [["a", "b", "c"]],
    [[1, 2]],
])
def test_a_malformed_document_is_refused(entries: object) -> None:
    with pytest.raises(CorruptState):
        decode_table({"entries": entries})


def test_load_refuses_an_oversized_or_corrupt_file_and_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / TABLE_FILE
    assert load_table(tmp_path) == []
    path.write_bytes(b"{" * 100)
    assert load_table(tmp_path) == []
    path.write_bytes(b" " * (MAX_TABLE_BYTES + 1))
    assert load_table(tmp_path) == []
    peer = new_peer()
    path.write_bytes(encode_state(TABLE_FORMAT, TABLE_VERSION,
                                  table_body([(peer, FIRST + 9)])))
    # A temporary file a crash left behind goes.
    stale = tmp_path / f".{TABLE_FILE}.abc123.tmp"
    stale.write_bytes(b"x")
    assert load_table(tmp_path) == [(peer, FIRST + 9)]
    assert not stale.exists()


# -- a daemon restarted on the same home -----------------------------------------

class MemoryDevice:
    """A TUN device in memory: what the daemon writes goes to a queue."""

    def __init__(self, name: str, vip6: ipaddress.IPv6Address) -> None:
        self.written = 0
        self.write_drops = 0
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    async def open(self) -> None:
        pass

    def start(self, on_packet: Callable[[bytes], None]) -> None:
        pass

    def write(self, packet: bytes) -> None:
        self.written += 1
        self.packets.put_nowait(packet)

    def close(self) -> None:
        pass


async def source_seen(daemon: Daemon, ext: VipExtension, sender: Host) -> str:
    """Send one wire-form IPv4 datagram from ``sender`` to ``daemon``; the
    source address the daemon's interface gets is the sender's vIPv4."""
    conn = await sender.connect(daemon.full_addrs()[0])
    assert isinstance(conn, QuicConn)
    device = ext.device
    assert isinstance(device, MemoryDevice)
    # A datagram that arrives before the daemon's handler is set is kept
    # for it (the first 32 of a connection), so one is enough.
    assert conn.send_datagram(udp4(str(SELF_V4), str(SELF_V4)))
    async with asyncio.timeout(10):
        got = await device.packets.get()
    return str(ipaddress.IPv4Address(got[12:16]))


async def run_once(home: Home, config: DaemonConfig, senders: list[Host]) -> tuple[
        list[str], dict[str, Any]]:
    key = init_home(home, config).key
    ext = VipExtension(device=MemoryDevice)
    async with Daemon(home, config, key, extensions=[ext]) as daemon:
        seen = [await source_seen(daemon, ext, sender) for sender in senders]
        async with await ApiClient.connect(daemon.api_path) as client:
            status = dict(await client.call("vip_status"))
        for sender in senders:
            sender.disconnect(daemon.peer_id)
    return seen, status


async def test_a_restarted_daemon_gives_each_peer_the_same_vip4(short_tmp: Path) -> None:
    home = Home(short_tmp / "home")
    config = DaemonConfig(listen=(LOOPBACK,))
    async with asyncio.timeout(60), Host(Ed25519PrivateKey.generate()) as p1, \
            Host(Ed25519PrivateKey.generate()) as p2, Host(Ed25519PrivateKey.generate()) as p3:
        first, status = await run_once(home, config, [p1, p2])
        assert first == ["100.64.0.2", "100.64.0.3"], first
        table = {p["peer_id"]: p for p in status["peers"]}
        assert table[str(p2.peer_id)]["vip4"] == "100.64.0.3", status
        assert table[str(p2.peer_id)]["vip6"] == str(vip6_of(p2.peer_id))
        assert status["bytes"]["in"] > 0, status
        saved = json.loads((home.root / TABLE_FILE).read_text())
        assert saved["format"] == TABLE_FORMAT and len(saved["entries"]) == 2
        assert (home.root / TABLE_FILE).stat().st_mode & 0o777 == 0o600

        # Restarted: p2 first this time, and a newcomer after the old ones.
        again, status = await run_once(home, config, [p2, p3, p1])
        assert again == ["100.64.0.3", "100.64.0.4", "100.64.0.2"], again
        assert status["vip4_table"] == 3, status
