"""The DNS front's limits by source, over real loopback sockets, with a
scripted resolver: per-source query buckets, one lookup per name, a
bounded set of pending names, the cache asked first, TCP idle and
per-source caps.  Attackers and the legitimate client use different
loopback addresses (each one a source of its own)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dnslib import RCODE, DNSRecord

from overlay.naming.dns_front import DnsFront, DnsFrontConfig
from overlay.naming.net_errors import NameNotFound
from overlay.naming.resolver import Resolution
from tests.waiting import wait_until

LEGIT = "127.0.0.1"
ATTACKER = "127.0.66.1"


class Script:
    """Names starting with ``slow`` wait for ``release``; every name is
    then unknown (NXDOMAIN).  ``known-gone`` is a cached negative answer."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.called = asyncio.Event()
        """Set on every call, so tests can wait for the lookups to start."""
        self.release = asyncio.Event()

    async def resolve(self, name: str) -> Resolution:
        self.calls.append(name)
        self.called.set()
        if name.startswith("slow"):
            await self.release.wait()
        raise NameNotFound(name)

    def cached(self, name: str) -> Resolution | None:
        if name == "known-gone.ovl":
            raise NameNotFound(name, cached=True)
        return None


@asynccontextmanager
async def front(config: DnsFrontConfig) -> AsyncIterator[tuple[DnsFront, Script]]:
    script = Script()
    async with DnsFront(config, script.resolve, script.cached) as running:
        try:
            yield running, script
        finally:
            script.release.set()


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


async def _ask(source: str, address: tuple[str, int], name: str) -> DNSRecord:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Reply, local_addr=(source, 0))
    try:
        transport.sendto(DNSRecord.question(name).pack(), address)
        return DNSRecord.parse(await protocol.reply)
    finally:
        transport.close()


def _blast(source: str, address: tuple[str, int], names: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for name in names:
            sock.sendto(DNSRecord.question(name).pack(), address)


async def test_one_lookup_per_name_and_a_bounded_set_of_pending_names() -> None:
    async with asyncio.timeout(30), front(DnsFrontConfig(port=0, max_pending_names=2)) as (dns, script):
        waiting = [asyncio.create_task(_ask(LEGIT, dns.address, "slow-a.ovl")) for _ in range(5)]
        waiting.append(asyncio.create_task(_ask(LEGIT, dns.address, "slow-b.ovl")))
        # The lookups start in the front's tasks.
        await wait_until(lambda: len(script.calls) >= 2, script.called, timeout=10)
        # Both slots taken: a third distinct name fails at once, a cached
        # negative answer is still served without any lookup.
        busy = await _ask(LEGIT, dns.address, "slow-c.ovl")
        assert busy.header.rcode == RCODE.SERVFAIL
        gone = await _ask(LEGIT, dns.address, "known-gone.ovl")
        assert gone.header.rcode == RCODE.NXDOMAIN
        script.release.set()
        answers = await asyncio.gather(*waiting)
        assert all(a.header.rcode == RCODE.NXDOMAIN for a in answers)
        assert sorted(script.calls) == ["slow-a.ovl", "slow-b.ovl"]  # five askers, one lookup
        assert dns.hits.snapshot()["dns.pending_names"] == 1


async def test_a_flooding_source_is_dropped_and_others_are_answered() -> None:
    config = DnsFrontConfig(port=0, queries_per_second=1.0, query_burst=3.0)
    async with asyncio.timeout(30), front(config) as (dns, _):
        await asyncio.to_thread(_blast, ATTACKER, dns.address, [f"n{i}.ovl" for i in range(20)])
        # Datagrams arrive in the order sent: once ours is answered, the
        # flood has been counted.
        answer = await _ask(LEGIT, dns.address, "fine.ovl")
        assert answer.header.rcode == RCODE.NXDOMAIN
        assert dns.hits.snapshot()["dns.rate"] == 17


async def test_tcp_idle_clients_are_closed_and_one_source_holds_few() -> None:
    config = DnsFrontConfig(port=0, tcp_idle_timeout=0.5, max_tcp_per_source=2)
    async with asyncio.timeout(30), front(config) as (dns, _):
        silent = [await asyncio.open_connection(*dns.address, local_addr=(ATTACKER, 0))
                  for _ in range(3)]
        # The third from that source is closed at once; the first two when idle.
        loop = asyncio.get_running_loop()
        started = loop.time()
        for reader, _ in silent:
            assert await reader.read() == b""
        assert loop.time() - started < 5.0
        # Meanwhile another source is served over TCP.
        reader, writer = await asyncio.open_connection(*dns.address, local_addr=(LEGIT, 0))
        query = DNSRecord.question("x.ovl").pack()
        writer.write(struct.pack("!H", len(query)) + query)
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        assert DNSRecord.parse(await reader.readexactly(size)).header.rcode == RCODE.NXDOMAIN
        writer.close()
        for _, w in silent:
            w.close()
        assert dns.hits.snapshot()["dns.tcp_per_source"] == 1
