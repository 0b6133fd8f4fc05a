"""The DNS front, asked by dnslib's client and by dig, over UDP and TCP."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from overlay.errors import ConfigError
from overlay.naming.dns_front import DnsFront, DnsFrontConfig, parse_dns_address
from overlay.naming.record import Service
from overlay.naming.service import Targets
from tests.namenet.helpers import NameNode, name_network

DIG = shutil.which("dig")


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


@asynccontextmanager
async def dns_network() -> AsyncIterator[tuple[list[NameNode], tuple[str, int]]]:
    async with name_network(3) as nodes:
        await nodes[1].names.register("web.ovl", Targets(
            self_peer=True, ips=(_ip("192.0.2.10"), _ip("2001:db8::10")),
            services=(Service("http", 8080), Service("ssh", 22, "host.example.org")),
            txt=("v=1",)))
        async with DnsFront(DnsFrontConfig(port=0), nodes[2].names.resolve) as front:
            yield nodes, front.address


async def _ask(address: tuple[str, int], name: str, qtype: str, tcp: bool = False) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    raw = await asyncio.to_thread(query.send, address[0], address[1], tcp, 5)
    return DNSRecord.parse(raw)


async def test_dnslib_client_gets_every_record_type() -> None:
    async with asyncio.timeout(60), dns_network() as (nodes, address):
        owner = nodes[1].host.peer_id
        a = await _ask(address, "web.ovl", "A")
        assert a.header.rcode == RCODE.NOERROR and a.header.aa == 1
        assert [str(rr.rdata) for rr in a.rr] == ["192.0.2.10"]
        aaaa = await _ask(address, "WEB.ovl.", "AAAA", tcp=True)
        assert [str(rr.rdata) for rr in aaaa.rr] == ["2001:db8::10"]
        txt = await _ask(address, "web.ovl", "TXT")
        texts = sorted(b"".join(rr.rdata.data).decode() for rr in txt.rr)
        assert texts == sorted(["v=1", f"peer={owner}"])
        srv = await _ask(address, "_http._tcp.web.ovl", "SRV")
        assert [(rr.rdata.port, str(rr.rdata.target)) for rr in srv.rr] == [(8080, "web.ovl.")]
        every = await _ask(address, "web.ovl", "SRV", tcp=True)
        assert sorted(rr.rdata.port for rr in every.rr) == [22, 8080]
        assert all(0 < rr.ttl <= 300 for rr in a.rr + txt.rr)


async def test_unknown_outside_and_malformed() -> None:
    async with asyncio.timeout(60), dns_network() as (_, address):
        missing = await _ask(address, "nobody.ovl", "A")
        assert missing.header.rcode == RCODE.NXDOMAIN
        bad = await _ask(address, "bad_label!.ovl", "A")
        assert bad.header.rcode == RCODE.NXDOMAIN
        outside = await _ask(address, "example.com", "A")
        assert outside.header.rcode == RCODE.REFUSED
        # Garbage and a response packet are dropped; the next query still works.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"\xff" * 7, address)
            sock.sendto(DNSRecord.question("web.ovl").reply().pack(), address)
        # Garbage over TCP ends that connection only.
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"\x00\x05hello")
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        ok = await _ask(address, "web.ovl", "A")
        assert [str(rr.rdata) for rr in ok.rr] == ["192.0.2.10"]


async def test_dig_over_udp_and_tcp() -> None:
    # A missing dig is a failure: scripts/test.sh installs it (bind9-dnsutils).
    assert DIG is not None, "dig is missing: apt-get install -y bind9-dnsutils"
    async with asyncio.timeout(60), dns_network() as (_, address):
        host, port = address

        async def dig(*args: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                DIG, f"@{host}", "-p", str(port), "+time=5", "+tries=1", *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            return out.decode()

        assert (await dig("+short", "web.ovl", "A")).split() == ["192.0.2.10"]
        assert (await dig("+short", "+tcp", "web.ovl", "AAAA")).split() == ["2001:db8::10"]
        srv = (await dig("+short", "_ssh._tcp.web.ovl", "SRV")).split()
        assert srv == ["0", "0", "22", "host.example.org."]
        assert "status: NXDOMAIN" in await dig("nobody.ovl", "A")
        assert "status: REFUSED" in await dig("example.com", "A")


def test_dns_address_option() -> None:
    assert parse_dns_address("127.0.0.1:5335") == ("127.0.0.1", 5335)
    assert parse_dns_address("[::1]:53") == ("::1", 53)
    assert parse_dns_address("off") is None
    for bad in ("localhost:53", "127.0.0.1", "127.0.0.1:99999", ":53"):
        with pytest.raises(ConfigError):
            parse_dns_address(bad)


async def test_large_answers_are_truncated_over_udp_and_whole_over_tcp() -> None:
    import time

    from overlay.naming.resolver import Resolution
    from tests.naming.helpers import key, record

    big = record(key(1), expires=time.time() + 3600, txt=tuple(f"{i:03d}" + "x" * 200
                                                               for i in range(12)))

    async def resolve(name: str) -> Resolution:
        return Resolution(name, big, "cache", 0.0, time.time() + 60)

    async with asyncio.timeout(30), DnsFront(DnsFrontConfig(port=0), resolve) as front:
        udp = await _ask(front.address, "alice.ovl", "TXT")
        assert udp.header.tc == 1 and not udp.rr
        tcp = await _ask(front.address, "alice.ovl", "TXT", tcp=True)
        assert tcp.header.tc == 0 and len(tcp.rr) == 13  # 12 TXT entries + the peer ID
        assert front.answered == 2
